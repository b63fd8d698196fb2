"""`khwtui up --auto --only compute` and `khwtui down --yes` on real nspawn nodes (issue 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from localcluster import LocalCluster, keyscan, local_config

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, unique_prefix: str, release_mirror: dict):
    c = LocalCluster(tmp_path / "c", local_config(f"t{unique_prefix}", 3, 2, release_mirror))
    yield c
    c.down()


def test_compute_pins_every_host_key_and_a_rerun_creates_nothing_and_down_leaves_nothing(cluster: LocalCluster) -> None:
    first = cluster.khwtui("up", "--auto", "--only", "compute")
    assert first.returncode == 0, first.stdout + first.stderr
    state = cluster.state()
    assert sorted(state["nodes"]) == ["controller-0", "controller-1", "controller-2", "lb", "worker-0", "worker-1"]
    for name, node in state["nodes"].items():
        assert keyscan(node["ssh_host"]) == node["host_key"], name
    assert state["stages"]["compute"]["status"] == "passed"
    runtime, objects = cluster.runtime(), sorted(o.name for o in cluster.host_objects())

    again = cluster.khwtui("up", "--auto", "--only", "compute")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "compute: every check passed, nothing to do" in (cluster.state_dir / "logs" / "khwtui.log").read_text()
    assert cluster.runtime() == runtime
    assert sorted(o.name for o in cluster.host_objects()) == objects
    assert cluster.state()["nodes"] == state["nodes"]

    down = cluster.khwtui("down", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert cluster.host_objects() == []
    assert cluster.state()["nodes"] == {}


def test_down_without_yes_and_without_a_terminal_exits_2_and_deletes_nothing(cluster: LocalCluster) -> None:
    assert cluster.khwtui("up", "--auto", "--only", "compute").returncode == 0
    before = sorted(o.name for o in cluster.host_objects())
    result = cluster.khwtui("down")
    assert result.returncode == 2
    assert "no terminal to ask on; nothing was deleted" in result.stderr
    assert sorted(o.name for o in cluster.host_objects()) == before
