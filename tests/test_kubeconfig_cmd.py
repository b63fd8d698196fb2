"""`khwtui kubeconfig [--merge]`: the path of your admin kubeconfig, or merged into ~/.kube/config
after a backup, keeping everything else there (README "Command line")."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
import yaml

from khwtui.artifacts.kubeconfigs import ADMIN_USER, kubeconfig, spec_named
from khwtui.artifacts.pki import Pki
from khwtui.cli.command_line import main
from khwtui.model import config
from khwtui.model.state import StateDir
from khwtui.model.topology import Topology
from khwtui.stages.admin_access import admin_kubeconfig_path
from khwtui.transport.kubeapi import credentials_from_kubeconfig

RAW = {"cluster": {"name": "kc-test"}, "provider": {"kind": "local"}, "topology": {"controllers": 1, "workers": 1},
       "pki": {"key_type": "ecdsa-p256"}}
OTHER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "work", "cluster": {"server": "https://work.example:6443", "certificate-authority-data": "d29yaw=="}}],
    "users": [{"name": "admin", "user": {"token": "work-token"}}],
    "contexts": [{"name": "work", "context": {"cluster": "work", "user": "admin"}}],
    "current-context": "work",
}


class Setup:
    def __init__(self, root: Path) -> None:
        self.config = root / "cluster.toml"
        self.config.write_text(tomli_w.dumps(RAW))
        self.state = StateDir(root / "state")
        self.home = root / "home"
        self.admin = admin_kubeconfig_path(self.state)
        self.target = self.home / ".kube" / "config"

    def write_admin(self) -> str:
        """The admin kubeconfig as the kubeconfigs stage writes it (0600 in the state folder)."""
        self.state.ensure_layout()
        topo = Topology(config.from_dict(RAW))
        pki = Pki(self.state.pki_dir, topo.config)
        pki.ensure(topo)
        text = kubeconfig(topo, pki, spec_named(topo, ADMIN_USER))
        self.admin.write_text(text)
        self.admin.chmod(0o600)
        return text

    def run(self, *args: str) -> int:
        return main(["kubeconfig", *args, "--config", str(self.config), "--state-dir", str(self.state.path)])

    def backups(self) -> list[Path]:
        return sorted(self.target.parent.glob("config.khwtui-backup-*"))


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    s = Setup(tmp_path)
    monkeypatch.setenv("HOME", str(s.home))
    return s


def test_it_prints_the_path_of_the_admin_kubeconfig(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    setup.write_admin()
    assert setup.run() == 0
    assert capsys.readouterr().out == f"{setup.admin}\n"
    assert not setup.target.exists()


def test_before_the_kubeconfig_exists_it_exits_2_saying_which_stage_to_run(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.run() == 2
    err = capsys.readouterr().err
    assert err == f"khwtui: no admin kubeconfig at {setup.admin} yet; fix: run `khwtui up --until admin-access`\n"


def test_merge_into_no_config_creates_it_private_and_makes_it_current(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    text = setup.write_admin()
    assert setup.run("--merge") == 0
    assert capsys.readouterr().out == f"merged context kc-test into {setup.target}\n"
    assert (setup.target.stat().st_mode & 0o777, setup.target.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    merged = yaml.safe_load(setup.target.read_text())
    assert merged["current-context"] == "kc-test"
    assert [u["name"] for u in merged["users"]] == ["kc-test-admin"]
    assert credentials_from_kubeconfig(setup.target.read_text()) == credentials_from_kubeconfig(text)
    assert setup.backups() == []


def test_merge_keeps_other_clusters_and_their_admin_user_and_backs_up_first(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    text = setup.write_admin()
    setup.target.parent.mkdir(parents=True)
    old = yaml.safe_dump(OTHER)
    setup.target.write_text(old)
    assert setup.run("--merge") == 0
    [backup] = setup.backups()
    out = capsys.readouterr().out.splitlines()
    assert out == [f"merged context kc-test into {setup.target} (backup of the old file: {backup})",
                   "switch to it with: kubectl config use-context kc-test"]
    assert backup.read_text() == old and backup.stat().st_mode & 0o777 == 0o600
    merged = yaml.safe_load(setup.target.read_text())
    assert merged["current-context"] == "work"
    assert [c["name"] for c in merged["contexts"]] == ["work", "kc-test"]
    assert merged["users"][0] == OTHER["users"][0]  # another cluster's "admin" is untouched
    assert credentials_from_kubeconfig(setup.target.read_text(), context="kc-test") == credentials_from_kubeconfig(text)


def test_merging_again_changes_nothing_and_makes_no_backup(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    setup.write_admin()
    setup.target.parent.mkdir(parents=True)
    setup.target.write_text(yaml.safe_dump(OTHER))
    assert setup.run("--merge") == 0
    written = (setup.target.read_bytes(), setup.target.stat().st_mtime_ns)
    capsys.readouterr()
    assert setup.run("--merge") == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{setup.target} already holds context kc-test; nothing changed"
    assert (setup.target.read_bytes(), setup.target.stat().st_mtime_ns) == written
    assert len(setup.backups()) == 1


def test_a_changed_admin_kubeconfig_replaces_its_entries_instead_of_adding_more(setup: Setup) -> None:
    setup.write_admin()
    setup.target.parent.mkdir(parents=True)
    setup.target.write_text(yaml.safe_dump(OTHER))
    assert setup.run("--merge") == 0
    doc = yaml.safe_load(setup.admin.read_text())
    doc["clusters"][0]["cluster"]["server"] = "https://10.240.0.99:6443"
    setup.admin.write_text(yaml.safe_dump(doc))
    assert setup.run("--merge") == 0
    merged = yaml.safe_load(setup.target.read_text())
    assert [(c["name"], c["cluster"]["server"]) for c in merged["clusters"]] == [("work", "https://work.example:6443"), ("kc-test", "https://10.240.0.99:6443")]
    assert len(merged["users"]) == len(merged["contexts"]) == 2
    first, second = setup.backups()  # two backups, even within one second: the original is kept
    assert yaml.safe_load(first.read_text()) == OTHER and second.read_text() != first.read_text()


def test_a_broken_kube_config_is_left_alone_with_a_one_line_error(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    setup.write_admin()
    setup.target.parent.mkdir(parents=True)
    setup.target.write_text("clusters: [unclosed\n")
    assert setup.run("--merge") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"khwtui: {setup.target}: not valid YAML (") and err.endswith("fix it or move it aside, nothing was changed\n")
    assert setup.target.read_text() == "clusters: [unclosed\n"
    assert setup.backups() == []
