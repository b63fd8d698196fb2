"""`khwtui script` on a machines cluster (issue 23): run by bash against fresh nodes, the exported
scripts leave the same files (content, mode, owner) as `khwtui up` on identical fresh nodes, and
`khwtui status --deep` judges both the same.

One small topology (1 controller, 1 worker, the lb) from a local cluster's nodes, twice: first the
scripts (stages etcd, control-plane, frontend, workers and routes: the ones that work on the test
bed's stand-ins), then the nodes are made again at the same addresses and `khwtui up` builds the
same stages with the same state folder (so the same certificates and keys). The paths compared are
every file `up` recorded placing; the scripts' `put` lines must name exactly those paths too.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import janitor
import pytest
from localcluster import LocalCluster, local_config
from test_machines_provider import inventory, machines
from workerbed import install_standin_runtime, shells, stat_files, worker_apt_repo

from khwtui.model.state import StateDir
from khwtui.toolkit.release_install import NODE_CACHE

pytestmark = pytest.mark.integration

SCRIPTED = ("etcd", "control-plane", "frontend", "workers", "routes")


def fresh_nodes(root: Path, raw: dict, apt: object) -> LocalCluster:
    """A local cluster's nodes (`up --only compute`) with the stand-ins' python3."""
    local = LocalCluster(root, raw, apt=apt)
    done = local.khwtui("up", "--auto", "--only", "compute")
    assert done.returncode == 0, done.stdout + done.stderr
    install_standin_runtime([node for name, node in shells(local.state_dir).items() if name != "lb"])
    return local


def deep_status(path: Path) -> set[tuple[str, str, str, str]]:
    """(stage, check, node, result) of every check `status --deep` reports."""
    _, out = machines(path, "status", "--deep", "--json")
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {(e["stage"], e["check"], e["node"], e["result"]) for e in events if e["kind"] == "check"}


def recorded_paths(path: Path) -> dict[str, list[str]]:
    """node -> every cluster file `up` recorded placing. Not compared: khwtui's own release cache
    (NODE_CACHE: each verified download and the manifest of what it installed, which lets a rerun
    skip the download); the scripts fetch and verify on the operator's machine instead, as the
    guide does, and put the programs straight where they run."""
    state = StateDir(path.parent / "state").load()
    found = {name: sorted(p for p in record.files if not p.startswith(f"{NODE_CACHE}/")) for name, record in state.nodes.items()}
    return {name: paths for name, paths in found.items() if paths}


def scripted_paths(out: Path) -> dict[str, set[str]]:
    """node -> every path a `put` line of the stage scripts places there."""
    found: dict[str, set[str]] = {}
    for stage in SCRIPTED:
        (script,) = out.glob(f"[0-9][0-9]-{stage}.sh")
        for line in script.read_text().splitlines():
            if line.startswith("put "):
                _, node, _, path, *_ = shlex.split(line)
                found.setdefault(node, set()).add(path)
    return found


def build_with_up(path: Path) -> None:
    code, out = machines(path, "up", "--auto", "--until", "control-plane")
    assert code == 0, out[-3000:]
    code, out = machines(path, "up", "--auto", "--only", "frontend,workers,routes")
    assert code == 3, out[-3000:]  # workers: node Ready is unverified on the stand-ins


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict) -> Iterator[dict]:
    apt = worker_apt_repo(tmp_path_factory.getbasetemp() / "worker-apt")
    raw = local_config(f"t{janitor.new_prefix()}", 1, 1, release_mirror)
    folder = tmp_path_factory.mktemp("script-machines")
    out = folder / "scripts"
    first = fresh_nodes(folder / "first", raw, apt)
    try:
        path = inventory(first, release_mirror, folder / "machines")
        code, log = machines(path, "up", "--auto", "--only", "compute")
        assert code == 0, log[-2000:]
        code, log = machines(path, "script", "--out", str(out))
        assert code == 0, log[-2000:]
        for stage in SCRIPTED:
            (script,) = out.glob(f"[0-9][0-9]-{stage}.sh")
            run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, check=False)
            assert run.returncode == 0, f"{script.name}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        nodes = shells(first.state_dir)
        scripted = scripted_paths(out)
        by_script = {name: stat_files(nodes[name], sorted(paths)) for name, paths in scripted.items()}
        build_with_up(path)  # checks first, so it records the stages; it must find nothing to change
        after_up = {name: stat_files(nodes[name], sorted(paths)) for name, paths in scripted.items()}
        script_status = deep_status(path)
    finally:
        first.down()
    raw = {**raw, "local": {k: v for k, v in raw["local"].items() if k not in ("apt_mirror", "apt_key")}}
    second = fresh_nodes(folder / "second", raw, apt)
    try:
        shutil.rmtree(path.parent / "state" / "logs", ignore_errors=True)
        (path.parent / "state" / "state.toml").unlink()  # new nodes, new host keys; pki/ and ssh/ stay
        inventory(second, release_mirror, folder / "machines")
        code, log = machines(path, "up", "--auto", "--only", "compute")
        assert code == 0, log[-2000:]
        build_with_up(path)
        recorded = recorded_paths(path)
        nodes = shells(second.state_dir)
        yield {"by_script": by_script, "by_up": {name: stat_files(nodes[name], paths) for name, paths in recorded.items()},
               "recorded": recorded, "scripted": scripted, "after_up": after_up, "script_status": script_status,
               "up_status": deep_status(path), "out": out}
    finally:
        second.down()


def test_the_scripts_leave_the_same_files_as_up(compared: dict) -> None:
    assert sum(len(p) for p in compared["recorded"].values()) > 40
    assert compared["by_script"] == compared["by_up"]
    assert "missing" not in {v for files in compared["by_up"].values() for v in files.values()}


def test_the_scripts_place_exactly_the_files_up_records(compared: dict) -> None:
    assert {node: set(paths) for node, paths in compared["recorded"].items()} == compared["scripted"]


def test_up_after_the_scripts_finds_nothing_to_change(compared: dict) -> None:
    assert compared["after_up"] == compared["by_script"]


def test_status_deep_judges_both_builds_the_same(compared: dict) -> None:
    assert compared["script_status"] == compared["up_status"]
    assert {(stage, result) for stage, _, _, result in compared["up_status"]} >= {(s, "passed") for s in SCRIPTED}


def test_every_release_file_is_verified_before_it_is_placed(compared: dict) -> None:
    for script in compared["out"].glob("[0-9][0-9]-*.sh"):
        lines = script.read_text().splitlines()
        for index, line in enumerate(lines):
            match = re.match(r"put \S+ downloads/([^/ ]+?)(?:\.d/\S+)? ", line)
            if match:
                fetched = [i for i, earlier in enumerate(lines[:index]) if earlier.startswith(f"fetch {match.group(1)} ")]
                assert fetched, f"{script.name}: {line} before its fetch"


def test_the_scripts_pass_shellcheck(compared: dict) -> None:
    scripts = sorted(str(p) for p in compared["out"].glob("*.sh"))
    done = subprocess.run(["shellcheck", "--external-sources", *scripts], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
