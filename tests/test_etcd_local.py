"""`khwtui up --auto --until etcd` builds a healthy TLS etcd on real nodes, and resumes (issue 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import janitor
import pytest
from localcluster import LocalCluster, fresh_download_cache, local_config

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, unique_prefix: str, release_mirror: dict):
    c = LocalCluster(tmp_path / "c", local_config(f"t{unique_prefix}", 3, 1, release_mirror))
    yield c
    c.down()


def host_etcdctl(cluster: LocalCluster, release_mirror: dict, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl from the release tarball, run on the operator's machine with the cluster's own certificates."""
    from mirror.tarballs import tar_members

    tree = release_mirror["tree"]
    binary = tmp_path / "etcdctl"
    if not binary.exists():
        binary.write_bytes(tar_members((tree.root / tree.artifacts["etcd"].path).read_bytes(), {"etcdctl": "etcdctl"})["etcdctl"])
        binary.chmod(0o755)
    pki = cluster.state_dir / "pki"
    endpoints = ",".join(f"https://{n['internal_ip']}:2379" for n in cluster.state()["nodes"].values() if n["role"] == "controller")
    tls = [f"--cacert={pki / 'ca.pem'}", f"--cert={pki / 'kubernetes.pem'}", f"--key={pki / 'kubernetes-key.pem'}"]
    return subprocess.run([str(binary), f"--endpoints={endpoints}", *tls, *args], capture_output=True, text=True, timeout=60, env={**os.environ, "ETCDCTL_API": "3"})


def events_until(proc: subprocess.Popen[str], stop) -> list[dict]:
    """Read the --json stream until `stop(event, seen)` is true (or the run ends); returns what was read."""
    seen: list[dict] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        seen.append(event)
        if stop(event, seen):
            break
    return seen


def etcd_commands(seen: list[dict]) -> int:
    return sum(1 for e in seen if e["kind"] == "log" and e["stage"] == "etcd" and e["stream"] == "cmd")


def certificates(cluster: LocalCluster) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((cluster.state_dir / "pki").glob("*.pem"))}


def test_sigkill_anywhere_in_pki_or_etcd_resumes_without_recreating_or_regenerating_anything(cluster: LocalCluster, release_mirror, tmp_path) -> None:
    kill_points = [
        ("pki", lambda e, seen: e["kind"] == "stage" and e["stage"] == "pki" and e["status"] == "running"),
        ("etcd after 2 commands", lambda e, seen: etcd_commands(seen) >= 2),
        ("etcd after 12 commands", lambda e, seen: etcd_commands(seen) >= 12),
        ("etcd while members start", lambda e, seen: e["kind"] == "log" and "start --no-block" in " ".join(e["lines"])),
    ]
    snapshot: dict[str, bytes] = {}
    runtime: dict = {}
    for where, stop in kill_points:
        proc = cluster.popen("up", "--auto", "--until", "etcd", "--json")
        seen = events_until(proc, stop)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert stop(seen[-1], seen), f"the run ended before the kill point {where}"
        state = cluster.state()  # always parses
        if state["stages"].get("pki", {}).get("status") == "passed":
            snapshot = snapshot or certificates(cluster)
            runtime = runtime or cluster.runtime()
            assert certificates(cluster) == snapshot, f"a certificate changed after the kill {where}"
            assert cluster.runtime() == runtime, f"nodes were re-created after the kill {where}"
    final = cluster.khwtui("up", "--auto", "--until", "etcd")
    assert final.returncode == 0, final.stdout + final.stderr
    assert certificates(cluster) == snapshot and cluster.runtime() == runtime
    members = host_etcdctl(cluster, release_mirror, tmp_path, "member", "list")
    assert len(members.stdout.splitlines()) == 3, members.stdout + members.stderr


def node_file_mtimes(cluster: LocalCluster) -> dict[str, float]:
    """mtime of every file khwtui recorded as placed, read in the nodes' overlay upper dirs."""
    mtimes = {}
    for name, node in cluster.state()["nodes"].items():
        upper = cluster.state_dir / "local" / "nodes" / name / "upper"
        for path in node.get("files", {}):
            mtimes[f"{name}:{path}"] = (upper / path.lstrip("/")).stat().st_mtime
    return mtimes


def etcd_started_at(cluster: LocalCluster) -> list[str]:
    stamps = []
    for name, node in sorted(cluster.state()["nodes"].items()):
        if node["role"] == "controller":
            pid = cluster.runtime()["nodes"][name]["init_pid"]
            out = subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "systemctl", "show", "-p", "ActiveEnterTimestamp", "etcd"], capture_output=True, text=True, check=True)
            stamps.append(out.stdout.strip())
    return stamps


def test_sigint_exits_130_and_resumes_and_a_finished_cluster_reruns_without_touching_anything(cluster: LocalCluster) -> None:
    proc = cluster.popen("up", "--auto", "--until", "etcd", "--json")
    events_until(proc, lambda e, seen: etcd_commands(seen) >= 6)
    proc.send_signal(signal.SIGINT)
    rest = [json.loads(line) for line in proc.stdout]  # type: ignore[union-attr]
    assert proc.wait() == 130
    assert rest[-1] == {**rest[-1], "kind": "finished", "exit_code": 130}
    assert cluster.state()["stages"]["etcd"]["status"] == "pending"

    done = cluster.khwtui("up", "--auto", "--until", "etcd")
    assert done.returncode == 0, done.stdout + done.stderr
    files, started = node_file_mtimes(cluster), etcd_started_at(cluster)
    assert len(files) >= 3 * 6 and all(s.startswith("ActiveEnterTimestamp=") and s != "ActiveEnterTimestamp=" for s in started)

    again = cluster.khwtui("up", "--auto", "--until", "etcd", "--json")
    assert again.returncode == 0
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert not any(e["kind"] == "log" and e["stream"] == "cmd" and e["lines"][0].startswith("put ") for e in events)
    assert node_file_mtimes(cluster) == files
    assert etcd_started_at(cluster) == started


def test_a_second_run_on_the_same_cluster_exits_2_naming_the_first_runs_pid(cluster: LocalCluster) -> None:
    first = cluster.popen("up", "--auto", "--until", "etcd", "--json")
    events_until(first, lambda e, seen: e["kind"] == "stage")
    second = cluster.khwtui("up", "--auto", "--until", "etcd")
    first.send_signal(signal.SIGINT)
    first.communicate()
    assert second.returncode == 2
    assert f"in use by another khwtui (pid {first.pid})" in second.stderr


def test_a_failing_node_gives_exit_1_with_the_node_and_its_last_output_lines(cluster: LocalCluster) -> None:
    assert cluster.khwtui("up", "--auto", "--until", "encryption").returncode == 0
    upper = cluster.state_dir / "local" / "nodes" / "controller-1" / "upper" / "var" / "lib"
    upper.mkdir(parents=True, exist_ok=True)
    (upper / "etcd").write_text("not a directory\n")  # the node's /var/lib/etcd, seen through its overlay
    result = cluster.khwtui("up", "--auto", "--until", "etcd")
    assert result.returncode == 1
    assert "✖ etcd · apply on controller-1" in result.stdout
    assert "File exists" in result.stdout.split("✖ etcd · apply on controller-1", 1)[1]


def test_a_tampered_tarball_with_a_matching_checksum_file_is_refused_and_nothing_reaches_the_nodes(tmp_path: Path, unique_prefix: str) -> None:
    from mirror import default_cache
    from mirror.server import MirrorServer
    from mirror.tarballs import build_release_tree

    tree = build_release_tree(tmp_path / "releases", default_cache())
    with MirrorServer(tree.root) as server:
        pinned = tree.config(server.url)
        tree.tamper("etcd")
        c = LocalCluster(tmp_path / "c", local_config(f"t{unique_prefix}", 1, 1, pinned))
        try:
            proc = c.khwtui("up", "--auto", "--until", "etcd", env=fresh_download_cache(tmp_path / "cache"))
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "expected " + pinned["binaries"]["sha256"][tree.artifacts["etcd"].name] in proc.stdout
            assert "refused, nothing of it was installed" in proc.stdout
            for node in ("controller-0", "worker-0"):
                assert not (c.state_dir / "local" / "nodes" / node / "upper" / "usr" / "local" / "bin" / "etcd").exists()
        finally:
            c.down()


# --- one fresh build, read by the tests below (it lives only while they run: they are last) ----------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict) -> Iterator[tuple[LocalCluster, subprocess.CompletedProcess[str]]]:
    """A fresh 3 + 1 cluster and its first `up --auto --until etcd --json`, which no test changes."""
    c = LocalCluster(tmp_path_factory.mktemp("etcd") / "c", local_config(f"t{janitor.new_prefix()}", 3, 1, release_mirror))
    try:
        yield c, c.khwtui("up", "--auto", "--until", "etcd", "--json")
    finally:
        c.down()


def test_until_etcd_builds_a_healthy_three_member_tls_cluster(built: tuple[LocalCluster, subprocess.CompletedProcess[str]], release_mirror: dict,
                                                               tmp_path: Path) -> None:
    cluster, result = built
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    health = host_etcdctl(cluster, release_mirror, tmp_path, "endpoint", "health")
    assert health.returncode == 0, health.stderr
    assert (health.stdout + health.stderr).count("is healthy") == 3
    members = host_etcdctl(cluster, release_mirror, tmp_path, "member", "list")
    assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == ["controller-0", "controller-1", "controller-2"]


def test_the_json_stream_replays_to_the_saved_stage_table(built: tuple[LocalCluster, subprocess.CompletedProcess[str]]) -> None:
    from khwtui.core.events import from_json
    from khwtui.engine.runner import replay

    cluster, result = built
    assert result.returncode == 0, result.stderr
    events = [from_json(line) for line in result.stdout.splitlines()]  # every line is one valid event
    saved = {name: stage["status"] for name, stage in cluster.state()["stages"].items()}
    assert replay(events) == saved
