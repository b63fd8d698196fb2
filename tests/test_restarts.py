"""Due restarts and crash points without nodes (issue 15): what RunContext records before a file
lands, what it restarts, when the record is cleared, how checks show it, and that a crash point
really SIGKILLs (a state save killed midway leaves the old state, which loads)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from khwtui.artifacts.render import NodeFile
from khwtui.core.crashpoints import ENV
from khwtui.core.events import FAILED
from khwtui.core.outcome import Outcome
from khwtui.engine.restarts import PENDING, with_due_restarts
from khwtui.model import config
from khwtui.model.cluster import Cluster
from khwtui.model.state import State, StateDir
from khwtui.model.topology import Topology
from khwtui.toolkit.run_context import RunContext, _fingerprint, node_record
from khwtui.transport.remote import RunResult

OLD, NEW = NodeFile("/etc/app/app.conf", b"old\n"), NodeFile("/etc/app/app.conf", b"new\n")
DATA = NodeFile("/var/lib/app/data", b"data\n")


@dataclass
class FakeNode:
    """One node's files and the commands run there; `saved_at_put` holds the state as saved at each write."""

    files: dict[str, NodeFile] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    saved_at_put: list[dict[str, str]] = field(default_factory=list)
    folder: StateDir | None = None

    async def run(self, host, command: str, **kwargs) -> RunResult:
        if command.startswith("sh -c"):  # RunContext.drifted: one fingerprint line per wanted file
            wanted = [f for f in (OLD, DATA) if f.path in command]
            return RunResult(0, "".join(f"{_fingerprint(self.files[f.path])}\n" if f.path in self.files else "missing\n" for f in wanted), "")
        self.commands.append(command)
        return RunResult(0, "", "")

    async def write(self, host, files: Sequence[NodeFile]) -> None:
        assert self.folder is not None
        self.saved_at_put.append(dict(self.folder.load().nodes["n0"].restarts))
        self.files |= {f.path: f for f in files}

    async def close(self) -> None:
        pass


def context(tmp_path: Path, node: FakeNode) -> RunContext:
    cfg = config.from_dict({"cluster": {"name": "t"}, "provider": {"kind": "local"}, "topology": {"controllers": 1, "workers": 1}})
    folder = StateDir(tmp_path / "state")
    folder.ensure_layout()
    state = State(nodes={"n0": node_record(Topology(cfg).nodes[0])})
    state.nodes["n0"].host_key = "ssh-ed25519 AAAA"
    node.folder = folder
    return RunContext(Cluster(cfg, folder, state), lambda event: None, None, lambda log: node, stage="app")


def test_a_due_restart_is_saved_before_the_first_file_lands_and_carried_out_until_settled(tmp_path: Path) -> None:
    node = FakeNode(files={OLD.path: OLD, DATA.path: DATA})
    run = context(tmp_path, node)
    changed = asyncio.run(run.place("n0", [NEW, DATA], restarts={"app": [NEW.path], "other": [DATA.path]}))
    assert changed == [NEW.path]
    assert node.saved_at_put == [{"app": "app"}]  # on disk before the put; "other" read nothing that changed

    resumed = context(tmp_path, FakeNode(files={OLD.path: NEW, DATA.path: DATA}))  # a new run: files in place
    resumed.state.nodes["n0"].restarts = StateDir(tmp_path / "state").load().nodes["n0"].restarts
    assert asyncio.run(resumed.place("n0", [NEW, DATA], restarts={"app": [NEW.path]})) == []
    asyncio.run(resumed.start_units("n0", ["app", "other"], restart="reload-or-restart"))
    commands = resumed.remote.commands
    assert commands == ["systemctl daemon-reload", "systemctl reload-or-restart app", "systemctl start other"]
    assert StateDir(tmp_path / "state").load().nodes["n0"].restarts == {"app": "app"}  # not yet checked

    resumed.settle_restarts()
    assert StateDir(tmp_path / "state").load().nodes["n0"].restarts == {}


def test_a_unit_whose_restart_is_due_is_failed_in_checks_and_probes_never_passed() -> None:
    state = State(nodes={"n0": node_record(Topology(config.from_dict({"provider": {"kind": "local"}})).nodes[0])})
    state.nodes["n0"].restarts = {"nginx": "frontend", "etcd": "etcd"}
    outcomes = [Outcome.passed("/healthz proxy", state.nodes["n0"].name, "200"), Outcome.passed("/version")]
    name = state.nodes["n0"].name
    state.nodes = {name: state.nodes["n0"]}
    marked = with_due_restarts(outcomes, state, "frontend")
    assert [(o.check, o.result, o.node, o.evidence.splitlines()[-1]) for o in marked if o.node] == [
        ("/healthz proxy", FAILED, name, f"nginx: {PENDING}"),
        ("nginx restarted", FAILED, name, f"nginx: {PENDING}"),
    ]
    assert marked[1] == outcomes[1]  # not a node's: unchanged
    assert with_due_restarts(outcomes, state, "rbac") == outcomes


def test_a_state_save_killed_at_its_crash_point_leaves_the_old_state_which_loads(tmp_path: Path) -> None:
    folder = StateDir(tmp_path / "state")
    folder.ensure_layout()
    folder.save(State(cluster="before"))
    script = "import sys; from khwtui.model.state import State, StateDir; StateDir(sys.argv[1]).save(State(cluster='after'))"
    killed = subprocess.run([sys.executable, "-c", script, str(folder.path)], env={**_env(), ENV: "etcd.placed,state.save"})
    assert killed.returncode == -signal.SIGKILL
    assert folder.load().cluster == "before" and list(folder.path.glob(".state.toml.*.tmp"))
    folder.save(State(cluster="again"))
    assert folder.load().cluster == "again" and not list(folder.path.glob(".state.toml.*.tmp"))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != ENV}
