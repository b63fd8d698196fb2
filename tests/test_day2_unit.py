"""Day 2 without nodes: the backup archive's checks, which units a renewal restarts, `khwtui ssh`'s
argument handling, and the commands' usage errors (issue 22)."""

from __future__ import annotations

import datetime as dt
import io
import json
import stat
import tarfile
from pathlib import Path

import pytest
from cryptography import x509

from khwtui.artifacts.encryption import load_or_create_key
from khwtui.artifacts.nodefiles import Artifacts, node_files
from khwtui.artifacts.pki import Pki
from khwtui.cli import command_line as cli
from khwtui.core.errors import UsageError
from khwtui.day2 import backup_archive as archive
from khwtui.day2.cert_rollout import embedding, leaf_names, unit_readers
from khwtui.model.config import from_dict
from khwtui.model.topology import Addresses, Topology
from khwtui.transport.node_ssh import ShellTarget, ssh_argv

MEMBERS = {
    archive.SNAPSHOT: b"etcd snapshot bytes",
    archive.STATE: b"schema = 1\n",
    **{member: f"contents of {member}".encode() for member, _, _ in archive.SECRETS},
}


def written(tmp_path: Path, cluster: str = "lab") -> Path:
    path = tmp_path / "b.tar.gz"
    archive.write(path, archive.build(cluster, "3.4.23", MEMBERS, now=1_700_000_000))
    return path


def test_a_backup_is_private_and_reads_back_whole(tmp_path: Path) -> None:
    path = written(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    backup = archive.read(path, "lab")
    assert backup.members == MEMBERS and backup.snapshot == b"etcd snapshot bytes"
    assert backup.manifest.ca_sha256 == archive.sha256(MEMBERS[archive.CA_MEMBER])


def _rewrite(path: Path, change) -> None:
    with tarfile.open(path) as tar:
        members = {i.name: tar.extractfile(i).read() for i in tar.getmembers()}  # type: ignore[union-attr]
    with tarfile.open(path, "w:gz") as tar:
        for name, data in change(members).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _manifest(edit):
    def change(members: dict[str, bytes]) -> dict[str, bytes]:
        return {**members, "manifest.json": json.dumps(edit(json.loads(members["manifest.json"]))).encode()}
    return change


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: {**m, archive.SNAPSHOT: m[archive.SNAPSHOT] + b"x"}, "member etcd/snapshot.db does not match its SHA-256"),
        (lambda m: {k: v for k, v in m.items() if k != "pki/ca-key.pem"}, "member pki/ca-key.pem listed in the manifest is missing"),
        (lambda m: {k: v for k, v in m.items() if k != "manifest.json"}, "no manifest.json; this is not a khwtui backup"),
        (_manifest(lambda raw: {**raw, "cluster": "other"}), "this backup is of cluster 'other', not 'lab'"),
        (_manifest(lambda raw: {**raw, "format": 9}), "backup format 9 is not 1"),
        (_manifest(lambda raw: {**raw, "members": {k: v for k, v in raw["members"].items() if k != archive.STATE}}), "the manifest lists no state.toml"),
        (lambda m: {**m, "manifest.json": b"{not json"}, "manifest.json is unreadable"),
    ],
)
def test_a_damaged_or_foreign_backup_is_refused_in_one_line(tmp_path: Path, damage, message: str) -> None:
    path = written(tmp_path)
    _rewrite(path, damage)
    with pytest.raises(UsageError) as refused:
        archive.read(path, "lab")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_truncated_or_missing_backup_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UsageError, match="it may be truncated"):
        archive.read(path, "lab")
    with pytest.raises(UsageError, match="no such file"):
        archive.read(tmp_path / "nowhere.tar.gz", "lab")


# --- renewal: what each node holds and restarts ------------------------------------------------

HA = {"provider": {"kind": "gcp"}, "gcp": {"project": "khw-demo-1234", "region": "us-west1", "zone": "us-west1-c"}, "topology": {"controllers": 2, "workers": 2}}


@pytest.fixture
def artifacts(tmp_path: Path) -> Artifacts:
    config = from_dict(HA)
    topo = Topology(config, Addresses(external={"worker-0": "198.51.100.20", "worker-1": "198.51.100.21"}, public="203.0.113.10"))
    pki = Pki(tmp_path / "pki", config)
    pki.ensure(topo)
    return Artifacts(topo, pki, load_or_create_key(tmp_path / "pki"))


def restarted(a: Artifacts, names: list[str]) -> dict[str, list[str]]:
    """node -> the units that read a file embedding one of the `names` certificates."""
    out = {}
    for node in a.topo.nodes:
        touched = {f.path for f in embedding(node_files(a)[node.name], [a.pki.cert_pem(n) for n in names])}
        out[node.name] = sorted(unit for unit, inputs in unit_readers(a, node).items() if inputs & touched)
    return out


def test_renewing_the_apiserver_certificate_restarts_etcd_and_the_apiserver_on_controllers_only(artifacts: Artifacts) -> None:
    assert restarted(artifacts, ["kubernetes"]) == {
        "controller-0": ["etcd", "kube-apiserver"], "controller-1": ["etcd", "kube-apiserver"], "worker-0": [], "worker-1": []}


def test_renewing_a_client_certificate_restarts_only_the_unit_whose_kubeconfig_carries_it(artifacts: Artifacts) -> None:
    assert restarted(artifacts, ["kube-scheduler"])["controller-0"] == ["kube-scheduler"]
    assert restarted(artifacts, ["kube-proxy"]) == {"controller-0": [], "controller-1": [], "worker-0": ["kube-proxy"], "worker-1": ["kube-proxy"]}
    assert restarted(artifacts, ["worker-1"]) == {"controller-0": [], "controller-1": [], "worker-0": [], "worker-1": ["kubelet"]}
    # the controller manager signs with the service-account key, which a renewal keeps: no restart
    assert restarted(artifacts, ["admin", "service-account"])["controller-0"] == ["kube-apiserver"]


def test_reissue_keeps_the_key_and_changes_the_serial(artifacts: Artifacts) -> None:
    pki = artifacts.pki
    before, key = pki.serial("kubernetes"), pki.key_pem("kubernetes")
    serials = pki.reissue(artifacts.topo, ["kubernetes"], now=dt.datetime.now(dt.UTC))
    assert serials["kubernetes"] != before and pki.serial("kubernetes") == serials["kubernetes"]
    assert pki.key_pem("kubernetes") == key
    assert x509.load_pem_x509_certificate(pki.cert_pem("kubernetes")).serial_number == serials["kubernetes"]
    assert {r.name: r.status for r in pki.rows(artifacts.topo)}["kubernetes"] == "ok"


def test_renew_names_are_checked_against_the_certificate_table(artifacts: Artifacts) -> None:
    assert leaf_names(artifacts.topo, "kubernetes, admin", False) == ["kubernetes", "admin"]
    assert "kubernetes" in leaf_names(artifacts.topo, None, True)
    with pytest.raises(UsageError, match="the CA is not renewed here"):
        leaf_names(artifacts.topo, "ca", False)
    with pytest.raises(UsageError, match="--renew: etcd is not a certificate of this cluster; pick from admin, worker-0"):
        leaf_names(artifacts.topo, "etcd", False)


# --- ssh and the command line ------------------------------------------------------------------


def test_ssh_sends_a_command_as_one_quoted_string(tmp_path: Path) -> None:
    target = ShellTarget("worker-0", "10.0.0.5", 22, "khwtui", "ssh-ed25519 AAAA", tmp_path / "key")
    argv = ssh_argv(target, tmp_path / "known_hosts", ["printf", "%s|", "a b", "$HOME"])
    assert argv[-3:] == ["--", "10.0.0.5", "printf '%s|' 'a b' '$HOME'"]
    assert ssh_argv(target, tmp_path / "known_hosts")[-2:] == ["--", "10.0.0.5"]


def test_the_day2_commands_parse_with_config_and_state_dir() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(cli.normalise(["restore", "b.tar.gz", "--yes", "--config", "c.toml", "--state-dir", "s"]))
    assert (args.command, args.file, args.yes, args.config, args.state_dir) == ("restore", "b.tar.gz", True, "c.toml", "s")
    assert parser.parse_args(["backup", "--out", "x"]).out == "x"
    assert parser.parse_args(["certs", "--renew", "admin,kubernetes"]).renew == "admin,kubernetes"
    assert parser.parse_args(["ssh", "--config", "c.toml", "worker-0", "--", "ls", "-l"]).remote_command == ["ls", "-l"]
    for command in ("stop", "start"):
        assert parser.parse_args([command, "--state-dir", "s"]).command == command
    with pytest.raises(UsageError):
        parser.parse_args(["certs", "--renew", "admin", "--renew-all"])


def test_stop_on_machines_exits_2_before_anything(tmp_path: Path, capsys) -> None:
    config = tmp_path / "m.toml"
    config.write_text('[provider]\nkind = "machines"\n[[machines.hosts]]\nname = "controller-0"\nrole = "controller"\n'
                      'address = "192.0.2.10"\nhost_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM6Pw1hQ7i2y0oXcWmB6mP8y4x1Jm4rC2v6f1nXz0aQk"\n'
                      '[[machines.hosts]]\nname = "worker-0"\nrole = "worker"\naddress = "192.0.2.20"\n'
                      'host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM6Pw1hQ7i2y0oXcWmB6mP8y4x1Jm4rC2v6f1nXz0aQk"\n'
                      '[topology]\ncontrollers = 1\nworkers = 1\n')
    assert cli.main(["stop", "--yes", "--config", str(config), "--state-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("khwtui: provider.kind: machines are your own hosts") and err.count("\n") == 1
