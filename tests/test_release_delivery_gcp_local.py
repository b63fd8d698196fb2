"""Node delivery on the gcp end-to-end bed (issue 19): the fake Compute API's instances are real
nodes that, like GCE's Debian images, have curl; the release mirror is served on their bridge.
`delivery = "auto"` probes, finds every node reaches it, and picks node: the controller downloads
etcd itself, this machine uploads no release file. One lean 1 + 1 cluster, up to etcd."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from mirror.tarballs import tar_members
from test_gcp_local import gcp_cluster, go_offline

from khwtui.artifacts.nodefiles import ETCD_BINARY
from khwtui.stages.etcd import ETCDCTL

pytestmark = pytest.mark.integration


def test_auto_picks_node_where_the_instances_reach_the_mirror_and_they_install_verified_etcd(
        tmp_path: Path, unique_prefix: str, release_mirror: dict, apt_repo: object, monkeypatch: pytest.MonkeyPatch) -> None:
    go_offline(monkeypatch, tmp_path)
    tree = release_mirror["tree"]
    etcd = tree.root / tree.artifacts["etcd"].path
    with gcp_cluster(tmp_path, unique_prefix, release_mirror, 1, 1, apt=apt_repo, packages=("curl",), releases_on_bridge=True) as (_fake, cluster):
        done = cluster.khwtui("up", "--auto", "--until", "etcd", "--json", env={"XDG_CACHE_HOME": str(tmp_path / "operator-cache")})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines()]
        logged = [line for e in events if e["kind"] == "log" for line in e["lines"]]
        mirror_origin = cluster.raw["binaries"]["urls"]["etcd"].split("/etcd/")[0]
        assert [line for line in logged if line.startswith("binary delivery:")] == [
            f"binary delivery: node — auto: every node reaches {mirror_origin}/etcd/v{release_mirror['versions']['etcd']}/{etcd.name}"]
        assert [line for line in logged if line.startswith(("upload ", "put /usr/local/bin"))] == []
        assert not (tmp_path / "operator-cache" / "khwtui" / "downloads").exists()
        assert {(e["node"], e["file"]) for e in events if e["kind"] == "transfer"} == {("controller-0", etcd.name)}

        recorded = cluster.state()["nodes"]["controller-0"]["files"]  # the sums the node computed of what it installed
        expected = tar_members(etcd.read_bytes(), {"etcd": ETCD_BINARY, "etcdctl": ETCDCTL})
        assert {path: recorded[path]["sha256"] for path in expected} == {path: hashlib.sha256(data).hexdigest() for path, data in expected.items()}
