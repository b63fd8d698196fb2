"""Day 2 on one real local cluster (issue 22): backup and restore of etcd, certificate renewal rolled
out live, stop/start, and a restore into a cluster rebuilt from scratch. The tests share one cluster
built `--until etcd` and run in file order; the rebuild comes last.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import signal
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import LocalCluster, built_until, status_results
from test_encryption_at_rest import SERIALIZED  # a Secret as the apiserver stores it
from test_etcd_local import etcd_started_at, host_etcdctl

from khwtui.artifacts.encryption_check import encode
from khwtui.artifacts.pki import Pki
from khwtui.core import crashpoints
from khwtui.model.cluster import open_cluster
from khwtui.stages.etcd import etcdctl
from khwtui.stages.smoke import SECRET_VALUE, encrypted_at_rest, etcd_key
from khwtui.toolkit.run_context import RunContext
from khwtui.transport.remote_factory import make_remote

pytestmark = pytest.mark.integration

CONTROLLERS = ("controller-0", "controller-1", "controller-2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict) -> Iterator[LocalCluster]:
    with built_until(tmp_path_factory.mktemp("day2") / "c", release_mirror, 3, 1, "etcd") as built:
        yield built


@pytest.fixture(scope="module")
def etcd(cluster: LocalCluster, release_mirror: dict, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("etcdctl")
    return lambda *args: host_etcdctl(cluster, release_mirror, folder, *args)


def value(etcd, key: str) -> str | None:
    out = etcd("get", key, "--print-value-only")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() or None


def served_serial(cluster: LocalCluster, node: str, port: int = 2379) -> int:
    """The serial etcd serves on the node's address, read with openssl s_client from this machine."""
    address = cluster.state()["nodes"][node]["internal_ip"]
    pki = cluster.state_dir / "pki"
    tls = ["-CAfile", str(pki / "ca.pem"), "-cert", str(pki / "kubernetes.pem"), "-key", str(pki / "kubernetes-key.pem")]
    hello = subprocess.run(["openssl", "s_client", "-connect", f"{address}:{port}", *tls], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    serial = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=hello.stdout, capture_output=True, check=True)
    return int(serial.stdout.decode().strip().split("=", 1)[1], 16)


def pki_serial(cluster: LocalCluster, name: str) -> int:
    opened = open_cluster(str(cluster.config_path), str(cluster.state_dir))
    return Pki(opened.state_dir.pki_dir, opened.config).serial(name)


def test_restore_brings_back_deleted_keys_and_drops_keys_written_after_the_backup(cluster: LocalCluster, etcd, tmp_path: Path) -> None:
    for key in ("/khwtui-test/a", "/khwtui-test/b"):
        assert etcd("put", key, f"value of {key}").returncode == 0
    out = tmp_path / "backup.tar.gz"
    made = cluster.khwtui("backup", "--out", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key_file = (cluster.state_dir / "pki" / "encryption-key").read_text().strip()
    assert "PRIVATE KEY" not in made.stdout + made.stderr and key_file not in made.stdout + made.stderr
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert set(tar.getnames()) == {"manifest.json", *manifest["members"]}
    assert {"etcd/snapshot.db", "state.toml", "pki/ca-key.pem", "pki/service-account-key.pem", "pki/encryption-key"} <= set(manifest["members"])

    for key in ("/khwtui-test/a", "/khwtui-test/b"):
        assert etcd("del", key).returncode == 0
    assert etcd("put", "/khwtui-test/later", "written after the backup").returncode == 0

    asked = cluster.khwtui("restore", str(out))
    assert (asked.returncode, asked.stderr.strip().splitlines()[-1:]) == (2, [
        "khwtui: restore needs a confirmation and there is no terminal to ask on; nothing was stopped. Run `khwtui restore --yes`"])
    assert value(etcd, "/khwtui-test/later") == "written after the backup"

    restored = cluster.khwtui("restore", str(out), "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert value(etcd, "/khwtui-test/a") == "value of /khwtui-test/a"
    assert value(etcd, "/khwtui-test/b") == "value of /khwtui-test/b"
    assert value(etcd, "/khwtui-test/later") is None
    health = etcd("endpoint", "health")
    assert (health.stdout + health.stderr).count("is healthy") == 3, health.stdout + health.stderr
    members = etcd("member", "list")
    assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == list(CONTROLLERS)
    (cluster.root / "good-backup").write_bytes(out.read_bytes())


def _rewritten(source: Path, target: Path, change) -> Path:
    """A copy of the backup with `change(name, data) -> data` applied to each member."""
    with tarfile.open(source) as tar, tarfile.open(target, "w:gz") as out:
        for info in tar.getmembers():
            data = change(info.name, tar.extractfile(info).read())  # type: ignore[union-attr]
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return target


def _another_cluster(name: str, data: bytes) -> bytes:
    if name != "manifest.json":
        return data
    manifest = json.loads(data)
    return json.dumps({**manifest, "cluster": "someone-else"}).encode()


def test_a_bad_backup_file_is_refused_in_one_line_with_exit_2_and_nothing_stopped(cluster: LocalCluster, tmp_path: Path) -> None:
    good = (cluster.root / "good-backup").read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    altered = _rewritten(cluster.root / "good-backup", tmp_path / "altered.tar.gz",
                         lambda name, data: data[:-1] + bytes([data[-1] ^ 1]) if name == "etcd/snapshot.db" else data)
    foreign = _rewritten(cluster.root / "good-backup", tmp_path / "foreign.tar.gz", _another_cluster)
    started = etcd_started_at(cluster)
    expected = {truncated: "it may be truncated", altered: "member etcd/snapshot.db does not match its SHA-256", foreign: "this backup is of cluster 'someone-else'"}
    for path, why in expected.items():
        refused = cluster.khwtui("restore", str(path), "--yes")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and why in refused.stderr, refused.stderr
        assert refused.stdout == ""
    assert etcd_started_at(cluster) == started


def test_renewing_kubernetes_restarts_etcd_node_by_node_and_every_member_serves_the_new_serial(cluster: LocalCluster) -> None:
    started = etcd_started_at(cluster)
    admin = cluster.khwtui("certs", "--renew", "admin")  # a client certificate no unit here reads
    assert admin.returncode == 0, admin.stdout + admin.stderr
    assert etcd_started_at(cluster) == started

    old = pki_serial(cluster, "kubernetes")
    assert {served_serial(cluster, node) for node in CONTROLLERS} == {old}
    renewed = cluster.khwtui("certs", "--renew", "kubernetes")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    new = pki_serial(cluster, "kubernetes")
    assert new != old
    assert {served_serial(cluster, node) for node in CONTROLLERS} == {new}
    after = etcd_started_at(cluster)
    assert all(a != b for a, b in zip(after, started, strict=True)), (started, after)
    assert "worker-0: holds none of them" in renewed.stdout
    assert cluster.state().get("renewals", {}) == {}


def test_a_renewal_killed_after_the_first_node_resumes_with_the_same_certificate(cluster: LocalCluster) -> None:
    killed = cluster.khwtui("certs", "--renew", "kubernetes", env={crashpoints.ENV: "rollout.next-node"})
    assert killed.returncode == -signal.SIGKILL and "controller-0 certs passed" in killed.stdout
    assert "controller-1 certs" not in killed.stdout  # killed between the first node and the next
    pending = cluster.state()["renewals"]["kubernetes"]
    assert int(pending, 16) == pki_serial(cluster, "kubernetes") == served_serial(cluster, "controller-0")

    resumed = cluster.khwtui("certs", "--renew", "kubernetes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert pki_serial(cluster, "kubernetes") == int(pending, 16)  # rolled out, not issued again
    assert {served_serial(cluster, node) for node in CONTROLLERS} == {int(pending, 16)}
    assert "controller-0: placed" in resumed.stdout and "controller-0: placed /etc/etcd/kubernetes.pem; restarted" not in resumed.stdout
    assert cluster.state()["renewals"] == {}


def test_ssh_runs_one_command_on_a_node_with_the_pinned_key(cluster: LocalCluster) -> None:
    command = [sys.executable, "-m", "khwtui", "--config", str(cluster.config_path), "--state-dir", str(cluster.state_dir)]
    result = subprocess.run([*command[:3], "ssh", *command[3:], "controller-1", "--", "printf", "%s|", "a b", "$HOME"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "a b|$HOME|"
    unknown = cluster.khwtui("ssh", "nope")
    assert unknown.returncode == 2 and "pick one of controller-0" in unknown.stderr


def test_stop_and_start_power_the_nodes_off_and_on_and_status_exits_as_before(cluster: LocalCluster, etcd) -> None:
    assert etcd("put", "/khwtui-test/power", "survives a power cycle").returncode == 0
    before = status_results(cluster)
    asked = cluster.khwtui("stop")
    assert asked.returncode == 2 and "nothing was stopped" in asked.stderr
    stopped = cluster.khwtui("stop", "--yes")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert stopped.stdout.count(": powered off") == len(cluster.state()["nodes"]), stopped.stdout
    assert not [o for o in cluster.host_objects() if o.kind == "machine"]

    started = cluster.khwtui("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert status_results(cluster) == before
    health = etcd("endpoint", "health")
    assert (health.stdout + health.stderr).count("is healthy") == 3, health.stdout + health.stderr
    assert value(etcd, "/khwtui-test/power") == "survives a power cycle"


async def _run_context(cluster: LocalCluster) -> RunContext:
    opened = open_cluster(str(cluster.config_path), str(cluster.state_dir))
    return RunContext(opened, lambda event: None, None, lambda log: make_remote(opened, log))


async def test_restore_into_a_cluster_rebuilt_from_scratch_brings_back_a_secret_that_still_decrypts(cluster: LocalCluster, tmp_path: Path) -> None:
    run = await _run_context(cluster)
    key = etcd_key("default", "khwtui-at-rest")
    try:
        stored = encode(run.config.encryption.provider, run.artifacts.encryption_key, SERIALIZED)
        put = f"printf %s {shlex.quote(base64.b64encode(stored).decode())} | base64 -d | {etcdctl('put', key)}"
        assert (await run.sh("controller-0", put, timeout=60)).stdout.strip() == "OK"
    finally:
        await run.close()
    out = tmp_path / "before-rebuild.tar.gz"
    assert cluster.khwtui("backup", "--out", str(out)).returncode == 0

    assert cluster.khwtui("down", "--yes", timeout=300).returncode == 0
    for path in (cluster.state_dir / "pki").iterdir():  # the operator lost the state folder's secrets too
        path.unlink()
    seeded = cluster.khwtui("restore", str(out), "--yes")
    assert seeded.returncode == 0 and "seeded pki/ca.pem" in seeded.stdout, seeded.stdout + seeded.stderr
    rebuilt = cluster.khwtui("up", "--auto", "--until", "etcd")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    restored = cluster.khwtui("restore", str(out), "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr

    run = await _run_context(cluster)
    try:
        outcome = await encrypted_at_rest(run, key, SECRET_VALUE)
    finally:
        await run.close()
    assert outcome.result == "passed", outcome.evidence
    assert "decrypts with the cluster's key to the secret's value" in outcome.evidence
