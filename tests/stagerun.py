"""A RunContext for stage code without nodes: a cluster from a config dict, state with its nodes
recorded, and an SSH runner that answers commands from a script (node output built by hand, as
the real programs print it) and counts what was sent to each node."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from khwtui.core.events import Event
from khwtui.model import config as config_mod
from khwtui.model.cluster import Cluster
from khwtui.model.state import StateDir
from khwtui.toolkit.run_context import RunContext, node_record
from khwtui.transport.remote import RunResult


@dataclass
class ScriptedRemote:
    """`answers`: (regex, answer) pairs, the latest first; an answer is a RunResult or a function of
    the command that makes one. Anything else exits 0 with no output."""

    answers: list[tuple[str, RunResult | Callable[[str], RunResult]]] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)  # (node, command)

    def answer(self, pattern: str, stdout: str = "", stderr: str = "", exit_status: int = 0) -> None:
        self.answers.insert(0, (pattern, RunResult(exit_status, stdout, stderr)))

    def answer_with(self, pattern: str, make: Callable[[str], RunResult]) -> None:
        self.answers.insert(0, (pattern, make))

    async def run(self, host, command: str, *, sudo: bool = False, timeout=None, check: bool = True, input=None) -> RunResult:
        self.sent.append((host.name, command))
        for pattern, result in self.answers:
            if re.search(pattern, command):
                return result if isinstance(result, RunResult) else result(command)
        return RunResult(0, "", "")

    def per_node(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node, _ in self.sent:
            counts[node] = counts.get(node, 0) + 1
        return counts

    async def close(self) -> None:
        pass


def stage_context(tmp: Path, raw: dict, *, provider: object = None, remote: ScriptedRemote | None = None,
                  external: dict[str, str] | None = None, done: tuple[str, ...] = ()) -> tuple[RunContext, list[Event]]:
    """A RunContext over `raw` (a config dict) whose nodes are all recorded as reachable; `done`
    stages are marked passed. Returns the context and the list its events land in."""
    config = config_mod.from_dict(raw)
    folder = StateDir(tmp / "state")
    folder.ensure_layout()
    state = folder.load()
    cluster = Cluster(config, folder, state)
    for node in cluster.topology.nodes:
        record = node_record(node)
        record.external_ip = (external or {}).get(node.name, "")
        record.host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        state.nodes[node.name] = record
    for name in done:
        state.stage(name).status = "passed"
    events: list[Event] = []
    script = remote or ScriptedRemote()
    return RunContext(cluster, events.append, provider, lambda log: script), events


def local_raw(name: str = "t", controllers: int = 1, workers: int = 2, **sections: dict) -> dict:
    """A local-provider config whose node addresses are on 127.30.0.0/24 (tests reach only 127/8)."""
    raw = {"cluster": {"name": name}, "provider": {"kind": "local"}, "topology": {"controllers": controllers, "workers": workers},
           "network": {"node_cidr": "127.30.0.0/24"}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw
