"""Node delivery on real local nodes (issue 19): the controller downloads etcd's release file from
the mirror on the bridge itself, verifies it before installing, and this machine uploads no
release file. One 1 + 1 cluster serves every test here, in order: an unreachable URL, a tampered
file on the mirror, then the good mirror (twice: the second run finds everything in place).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import janitor
import pytest
from localcluster import LocalCluster, fresh_download_cache, local_config
from mirror.tarballs import tar_members
from workerbed import shells, stat_files

from khwtui.artifacts.nodefiles import ETCD_BINARY
from khwtui.stages.etcd import ETCDCTL
from khwtui.toolkit.release_install import NODE_CACHE

pytestmark = pytest.mark.integration

NODE = "controller-0"
PROGRAMS = (ETCD_BINARY, ETCDCTL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict, apt_repo: object) -> Iterator[LocalCluster]:
    raw = local_config(f"t{janitor.new_prefix()}", 1, 1, release_mirror, binaries={"delivery": "node"})
    c = LocalCluster(tmp_path_factory.mktemp("delivery") / "c", raw, apt=apt_repo, releases=release_mirror)
    c.good = copy.deepcopy(c.raw["binaries"])  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.down()


@pytest.fixture(scope="module")
def etcd_file(release_mirror: dict) -> Path:
    tree = release_mirror["tree"]
    return tree.root / tree.artifacts["etcd"].path


def with_etcd_url(cluster: LocalCluster, url: str) -> None:
    cluster.raw["binaries"] = copy.deepcopy(cluster.good)  # type: ignore[attr-defined]
    cluster.raw["binaries"]["urls"]["etcd"] = url
    cluster.write_config()


def up_until_etcd(cluster: LocalCluster, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`up --auto --until etcd` with its own operator download cache, so tests can see it stays empty."""
    return cluster.khwtui("up", "--auto", "--until", "etcd", *extra, env=fresh_download_cache(tmp_path / "operator-cache"))


def nothing_of_etcd_installed(cluster: LocalCluster, sha256: str) -> None:
    node = shells(cluster.state_dir)[NODE]
    assert set(stat_files(node, list(PROGRAMS)).values()) == {"missing"}
    leftovers = node.run(f"ls -A {NODE_CACHE} 2>/dev/null || true").stdout.split()
    assert [name for name in leftovers if name.startswith(sha256)] == []


def one_line_with(output: str, *parts: str) -> str:
    lines = [line for line in output.splitlines() if all(part in line for part in parts)]
    assert lines, f"no line has all of {parts}:\n{output[-3000:]}"
    return lines[0]


def test_an_unreachable_url_fails_in_one_line_with_the_url_and_the_fix_and_installs_nothing(cluster: LocalCluster, etcd_file: Path,
                                                                                          tmp_path: Path) -> None:
    gateway = cluster.servers[0].url.split("//")[1].split(":")[0]
    url = f"http://{gateway}:9/{etcd_file.name}"  # the discard port: nothing listens there
    with_etcd_url(cluster, url)
    done = up_until_etcd(cluster, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    line = one_line_with(done.stdout, f"{NODE} could not download {url}", "fix:")
    assert "binaries.mirror" in line and 'binaries.delivery = "push"' in line and "outbound access" in line
    nothing_of_etcd_installed(cluster, cluster.good["sha256"][etcd_file.name])  # type: ignore[attr-defined]


def test_a_tampered_file_on_the_mirror_is_refused_on_the_node_and_nothing_is_installed(cluster: LocalCluster, release_mirror: dict,
                                                                                     tmp_path: Path) -> None:
    tree = release_mirror["tree"]
    shutil.copytree(tree.root / "etcd", tmp_path / "tampered" / "etcd")
    tampered = dataclasses.replace(tree, root=tmp_path / "tampered")
    tampered.tamper("etcd")  # the file and its published checksum change; the pinned sum does not
    server = cluster.serve(tampered.root)
    url = cluster.good["urls"]["etcd"].replace(cluster.servers[1].url, server.url)  # type: ignore[attr-defined]
    with_etcd_url(cluster, url)
    pinned = cluster.good["sha256"][Path(tree.artifacts["etcd"].path).name]  # type: ignore[attr-defined]

    done = up_until_etcd(cluster, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    full = url.format(version=release_mirror["versions"]["etcd"], arch="amd64")
    line = one_line_with(done.stdout, f"{NODE} refused", full, f"expected {pinned}", "nothing of it was installed")
    assert sum(server.hits.values()) >= 1  # the node fetched it: this machine downloads nothing in node delivery
    assert not any((tmp_path / "operator-cache").rglob("*.tar.gz")), line
    nothing_of_etcd_installed(cluster, pinned)


def test_node_delivery_installs_verified_binaries_uploads_no_release_file_and_reports_progress(cluster: LocalCluster, etcd_file: Path,
                                                                                              tmp_path: Path) -> None:
    with_etcd_url(cluster, cluster.good["urls"]["etcd"])  # type: ignore[attr-defined]
    done = up_until_etcd(cluster, tmp_path, "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]

    logged = [line for e in events if e["kind"] == "log" for line in e["lines"]]
    assert any(line.startswith('binary delivery: node — binaries.delivery = "node"') for line in logged)
    assert [line for line in logged if line.startswith(("upload ", "put /usr/local/bin"))] == []
    assert not (tmp_path / "operator-cache" / "khwtui" / "downloads").exists()

    expected = tar_members(etcd_file.read_bytes(), {"etcd": ETCD_BINARY, "etcdctl": ETCDCTL})
    seen = stat_files(shells(cluster.state_dir)[NODE], list(PROGRAMS))
    assert seen == {path: f"{hashlib.sha256(data).hexdigest()} 755 root root" for path, data in expected.items()}

    transfers = [e for e in events if e["kind"] == "transfer"]
    assert {(e["node"], e["file"], e["mode"]) for e in transfers} == {(NODE, etcd_file.name, "node")}
    done_bytes = [e["done"] for e in transfers]
    assert done_bytes == sorted(done_bytes) and done_bytes[-1] == transfers[-1]["total"] == etcd_file.stat().st_size

    again = up_until_etcd(cluster, tmp_path, "--json")
    assert again.returncode == 0, again.stdout[-3000:]
    rerun = [json.loads(line) for line in again.stdout.splitlines()]
    assert [e for e in rerun if e["kind"] == "transfer"] == []
    assert not any(line.startswith("khwtui-changed") for e in rerun if e["kind"] == "log" for line in e["lines"])
