"""A RunContext for stage code without nodes: a cluster from a config dict, state with its nodes
recorded, and an SSH runner that answers commands from a script (node output built by hand, as
the real programs print it), keeps the files put on each node and counts what was sent to each node."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from khwtui.artifacts.pki import Pki
from khwtui.artifacts.render import NodeFile
from khwtui.core.events import Event
from khwtui.model import config as config_mod
from khwtui.model.cluster import Cluster
from khwtui.model.state import StateDir
from khwtui.toolkit.run_context import RunContext, node_record
from khwtui.transport.remote import RunResult

T = TypeVar("T")
Answer = RunResult | Callable[[str], RunResult]
# RunContext.drifted's one command: a sha256sum and `stat -c "%a %U %G"` line (or "missing") per path
FINGERPRINTS = re.compile(r'for f in (.*?); do if \[ -f "\$f" \]; then .*stat -c "%a %U %G"')


@dataclass
class ScriptedRemote:
    """`answers`: (regex, node, answer), the latest first; an answer is a RunResult or a function of
    the command that makes one, for the node named or, where that is "", for every node. Anything
    else exits 0 with no output. `files` keeps what was put on each node (node -> path -> NodeFile,
    owner and group included), and RunContext.drifted's fingerprints are answered from it."""

    answers: list[tuple[str, str, Answer]] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)  # (node, command)
    files: dict[str, dict[str, NodeFile]] = field(default_factory=dict)

    def answer(self, pattern: str, stdout: str = "", stderr: str = "", exit_status: int = 0, *, node: str = "") -> None:
        self.answers.insert(0, (pattern, node, RunResult(exit_status, stdout, stderr)))

    def answer_with(self, pattern: str, make: Callable[[str], RunResult], *, node: str = "") -> None:
        self.answers.insert(0, (pattern, node, make))

    async def run(self, host, command: str, *, sudo: bool = False, timeout=None, check: bool = True, input=None) -> RunResult:
        self.sent.append((host.name, command))
        paths = fingerprinted(command)
        if paths is not None:
            return RunResult(0, "".join(self._fingerprint(host.name, path) for path in paths), "")
        for pattern, node, result in self.answers:
            if node in ("", host.name) and re.search(pattern, command):
                return result if isinstance(result, RunResult) else result(command)
        return RunResult(0, "", "")

    async def write(self, host, files: Sequence[NodeFile]) -> None:
        """As Remote.write: every file put (bytes, mode, owner and group), without comparing first."""
        self.files.setdefault(host.name, {}).update({f.path: f for f in files})

    def _fingerprint(self, node: str, path: str) -> str:
        """The line the node prints for `path`: its sum, then its mode, owner and group as stat prints them."""
        kept = self.files.get(node, {}).get(path)
        if kept is None:
            return "missing\n"
        return f"{hashlib.sha256(kept.content).hexdigest()} {kept.mode:o} {kept.owner} {kept.group}\n"

    def take(self, node: str) -> list[str]:
        """The commands sent to `node` since the last take, forgotten (for a test that looks step by step)."""
        taken = [command for name, command in self.sent if name == node]
        self.sent[:] = [(name, command) for name, command in self.sent if name != node]
        return taken

    def per_node(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node, _ in self.sent:
            counts[node] = counts.get(node, 0) + 1
        return counts

    async def close(self) -> None:
        pass


def fingerprinted(command: str) -> list[str] | None:
    """The paths RunContext.drifted asks about, or None for any other command."""
    if not command.startswith("sh -c "):
        return None
    found = FINGERPRINTS.match(shlex.split(command)[2])
    return shlex.split(found.group(1)) if found else None


def in_turn(answers: list[T]) -> T:
    """The next of `answers`, the last one repeating: a node whose answer changes from poll to poll."""
    return answers.pop(0) if len(answers) > 1 else answers[0]


def stage_context(tmp: Path, raw: dict, *, provider: object = None, remote: ScriptedRemote | None = None,
                  external: dict[str, str] | None = None, done: tuple[str, ...] = (), stage: str = "",
                  pki: bool = False) -> tuple[RunContext, list[Event]]:
    """A RunContext over `raw` (a config dict) whose nodes are all recorded as reachable; `done`
    stages are marked passed; `stage` is the one running (as the engine sets it); with `pki`, the
    state folder holds the PKI the pki stage makes (run.artifacts read it from there). Returns the
    context and the list its events land in."""
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
    if pki:
        Pki(folder.pki_dir, config).ensure(cluster.topology)
    events: list[Event] = []
    script = remote or ScriptedRemote()
    return RunContext(cluster, events.append, provider, lambda log: script, stage=stage), events


class NodeScript(Protocol):
    def script(self, remote: ScriptedRemote, node: str) -> None:
        """Register on `remote` what `node`'s programs answer."""


N = TypeVar("N", bound=NodeScript)


@dataclass
class Simulated(Generic[N]):
    """A stage's real RunContext over scripted nodes: `remote` keeps their files and the commands
    sent, `nodes` say what each node's programs answer."""

    run: RunContext
    remote: ScriptedRemote
    nodes: dict[str, N]

    def files(self, node: str) -> dict[str, NodeFile]:
        """`node`'s files as kept by the remote, live: empty until something is put there."""
        return self.remote.files.setdefault(node, {})

    def sent(self, node: str, prefix: str) -> list[str]:
        """The commands sent to `node` that start with `prefix`, in order (a poll's count)."""
        return [command for name, command in self.remote.sent if name == node and command.startswith(prefix)]

    def changes(self, node: str) -> list[str]:
        """The state-changing systemctl commands sent to `node` since the last call (queries left out)."""
        return [c for c in self.remote.take(node) if c.startswith("systemctl ") and not c.startswith(("systemctl show ", "systemctl is-active "))]


def simulate(tmp: Path, raw: dict, stage: str, nodes: dict[str, N], provider: object = None) -> Simulated[N]:
    """`raw`'s cluster with its PKI made, `stage` running, each of `nodes` answering as scripted."""
    remote = ScriptedRemote()
    run, _ = stage_context(tmp, raw, provider=provider, remote=remote, stage=stage, pki=True)
    for name, node in nodes.items():
        node.script(remote, name)
    return Simulated(run, remote, nodes)


def local_raw(name: str = "t", controllers: int = 1, workers: int = 2, **sections: dict) -> dict:
    """A local-provider config whose node addresses are on 127.30.0.0/24 (tests reach only 127/8)."""
    raw = {"cluster": {"name": name}, "provider": {"kind": "local"}, "topology": {"controllers": controllers, "workers": workers},
           "network": {"node_cidr": "127.30.0.0/24"}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw
