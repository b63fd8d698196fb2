"""What a stage works with: the cluster, the SSH runner, the provider, events and the file record.

Stages never talk to asyncssh, the state file or the event sink directly; they call `sh`,
`place`, `drifted` and `each` here, so every command is logged under its node and stage and
every file placed is recorded in state (which makes reruns cheap and tells `down` what to remove).

Restarts survive a crash: `place` records in state.toml, before the first byte lands, every unit
whose inputs it is about to change; `start_units` restarts every unit so recorded (on a resumed
run too, when the files are long in place) and the engine clears them once the stage's check
passed after those restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from khwtui.artifacts.render import NodeFile
from khwtui.core import crashpoints
from khwtui.core.events import FAILED, PASSED, RUNNING, LogLines, NodeChanged, Sink, Status
from khwtui.model.cluster import Cluster
from khwtui.model.config import Config
from khwtui.model.state import FileRecord, NodeRecord, State
from khwtui.model.topology import Node, Topology
from khwtui.providers.base import Provider
from khwtui.toolkit.apt import STARTED as APT_STARTED

if TYPE_CHECKING:  # imported where used: asyncssh and cryptography load on a run's first SSH command or certificate
    from khwtui.artifacts.nodefiles import Artifacts
    from khwtui.transport.remote import Host, Remote, RunResult

T = TypeVar("T")
LineFn = Callable[[str, str, str], None]  # (node, line, stream): where the SSH runner sends each streamed line
RemoteFactory = Callable[[LineFn], "Remote"]
NODE_CONCURRENCY = 16  # nodes worked on at once; the SSH runner bounds channels per node itself
# The stage whose work this task does, where stages run side by side over one SSH runner (a health
# round probes them all at once): the runner's lines are logged under it, not the shared context's.
STAGE_AT_WORK: ContextVar[str] = ContextVar("STAGE_AT_WORK", default="")


@dataclass
class RunContext:
    cluster: Cluster
    emit: Sink
    provider: Provider
    remote_factory: RemoteFactory
    clock: Callable[[], float] = time.time
    stage: str = ""
    deliveries: dict = field(default_factory=dict)  # release origins -> delivery.Choice, decided once per run
    _remote: Remote | None = field(default=None, repr=False)
    _restarted: set[tuple[str, str]] = field(default_factory=set, repr=False)  # (node, unit) restarted this run

    @classmethod
    def of(cls, cluster: Cluster, emit: Sink, stage: str = "") -> RunContext:
        """Over the cluster's own provider and SSH runner, the runner's lines to the run's log:
        what a command outside a build (status, a day-2 operation) works with."""
        from khwtui.providers.factory import make_provider
        from khwtui.transport.remote_factory import make_remote

        return cls(cluster, emit, make_provider(cluster), lambda log: make_remote(cluster, log), stage=stage)

    # --- the cluster ----------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.cluster.config

    @property
    def state(self) -> State:
        return self.cluster.state

    @property
    def topo(self) -> Topology:
        return self.cluster.topology

    def save(self) -> None:
        self.cluster.state_dir.save(self.cluster.state)

    @cached_property
    def artifacts(self) -> Artifacts:
        """Certificates, kubeconfigs and the encryption key as the offline stages made them."""
        from khwtui.artifacts.encryption import load_or_create_key
        from khwtui.artifacts.nodefiles import Artifacts
        from khwtui.artifacts.pki import Pki

        folder = self.cluster.state_dir
        return Artifacts(self.topo, Pki(folder.pki_dir, self.config), load_or_create_key(folder.pki_dir))

    def forget_artifacts(self) -> None:
        """Drop the cached artifacts after the PKI or the addresses changed."""
        self.__dict__.pop("artifacts", None)

    # --- events and logs ------------------------------------------------------------------

    def log(self, node: str, line: str, stream: str = "out") -> None:
        stage = STAGE_AT_WORK.get() or self.stage
        stamp = time.strftime("%H:%M:%S", time.localtime(self.clock()))
        self.cluster.state_dir.append_log(node, [f"{stamp} [{stage}] {'$ ' if stream == 'cmd' else ''}{line}"])
        self.emit(LogLines(node, stage, (line,), stream, self.clock()))
        if line == APT_STARTED:
            crashpoints.reached("apt.started")

    def node_status(self, node: str, status: Status, detail: str = "") -> None:
        address = self.state.nodes[node].internal_ip if node in self.state.nodes else ""
        self.emit(NodeChanged(node, status, self.stage, detail, address, self.clock()))

    # --- SSH ------------------------------------------------------------------------------

    @property
    def remote(self) -> Remote:
        if self._remote is None:
            self._remote = self.remote_factory(self.log)
        return self._remote

    def host(self, node: str) -> Host:
        from khwtui.transport.remote import Host

        record = self.state.nodes[node]
        return Host(node, record.ssh_host or record.internal_ip, record.ssh_port, self.config.ssh.user, record.host_key)

    async def sh(self, node: str, command: str, *, sudo: bool = True, timeout: float | None = 300, check: bool = True) -> RunResult:
        """Run `command` on `node` (as root by default), its output streamed into the node's log."""
        return await self.remote.run(self.host(node), command, sudo=sudo, timeout=timeout, check=check)

    async def close(self) -> None:
        if self._remote is not None:
            await self._remote.close()
            self._remote = None

    # --- files ----------------------------------------------------------------------------

    async def drifted(self, node: str, files: Iterable[NodeFile]) -> list[NodeFile]:
        """The files whose bytes, mode or owner on the node differ from the wanted ones (one command)."""
        wanted = list(files)
        if not wanted:
            return []
        paths = " ".join(shlex.quote(f.path) for f in wanted)
        script = (
            f'for f in {paths}; do if [ -f "$f" ]; then '
            'printf "%s %s\\n" "$(sha256sum < "$f" | cut -d" " -f1)" "$(stat -c "%a %U %G" "$f")"; '
            'else echo "missing"; fi; done'
        )
        result = await self.remote.run(self.host(node), f"sh -c {shlex.quote(script)}", sudo=True, timeout=120, check=True)
        seen = result.stdout.splitlines()
        return [f for f, line in zip(wanted, seen, strict=True) if line != _fingerprint(f)]

    async def place(self, node: str, files: Iterable[NodeFile], restarts: Mapping[str, Collection[str]] | None = None) -> list[str]:
        """Put every file that differs; record all of them. Returns the paths that changed.

        `restarts`: unit -> the paths it reads. A unit any of whose paths differ is recorded as due
        for a restart in state.toml before anything is put, so no crash can forget it."""
        wanted = list(files)
        drift = await self.drifted(node, wanted)
        record = self.state.nodes[node]
        due = self.mark_due(node, [f.path for f in drift], restarts or {})
        if drift:
            await self.remote.write(self.host(node), drift)  # drifted() just compared them: one channel for all
        for f in wanted:
            record.files[f.path] = FileRecord(f.path, hashlib.sha256(f.content).hexdigest(), f.mode, f.owner, f.group, self.stage)
        if drift:
            self.save()
        if due:
            crashpoints.reached(f"{self.stage}.placed")
        return [f.path for f in drift]

    def mark_due(self, node: str, changing: Iterable[str], restarts: Mapping[str, Collection[str]]) -> list[str]:
        """Record and save, as due on `node`, each unit that reads one of the `changing` paths; returns them."""
        paths = set(changing)
        due = [unit for unit, inputs in restarts.items() if paths & set(inputs)]
        if due:
            self.state.nodes[node].restarts.update(dict.fromkeys(due, self.stage))
            self.save()
        return due

    def restart_due(self, node: str, unit: str) -> bool:
        return unit in self.state.nodes[node].restarts

    async def start_units(self, node: str, units: Iterable[str], *, restart: str = "restart", options: tuple[str, ...] = ()) -> None:
        """Start each unit, in order; a unit whose restart is due gets `systemctl <restart>` instead
        (after a daemon-reload, as its unit file may be among what changed)."""
        units = list(units)
        due = [u for u in units if self.restart_due(node, u)]
        if due:
            await self.sh(node, "systemctl daemon-reload")
        for unit in units:
            self.record_unit(node, unit)
            if unit in due:
                self.log(node, f"{unit}: configuration changed, restarting")
                await self.sh(node, shlex.join(["systemctl", restart, *options, unit]))
                self._restarted.add((node, unit))
            else:
                await self.sh(node, shlex.join(["systemctl", "start", *options, unit]))

    def settle_restarts(self) -> None:
        """The stage's check passed after its restarts: they are done, forget them (saved)."""
        settled = False
        for node, unit in self._restarted:
            restarts = self.state.nodes[node].restarts
            if restarts.get(unit) == self.stage:
                del restarts[unit]
                settled = True
        self._restarted.clear()
        if settled:
            self.save()

    def record_unit(self, node: str, unit: str) -> None:
        units = self.state.nodes[node].units
        if unit not in units:
            units.append(unit)

    # --- concurrency ------------------------------------------------------------------------

    async def each(self, nodes: Iterable[Node], work: Callable[[Node], Awaitable[T]]) -> list[T]:
        """Run `work` on every node at once (bounded); all finish, then the first error is raised."""
        gate = asyncio.Semaphore(NODE_CONCURRENCY)

        async def one(node: Node) -> T:
            async with gate:
                self.node_status(node.name, RUNNING)
                try:
                    result = await work(node)
                except Exception as exc:
                    self.node_status(node.name, FAILED, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    raise
                self.node_status(node.name, PASSED)
                return result

        results = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return [r for r in results if not isinstance(r, BaseException)]


def _fingerprint(f: NodeFile) -> str:
    return f"{hashlib.sha256(f.content).hexdigest()} {f.mode:o} {f.owner} {f.group}"


def node_record(node: Node) -> NodeRecord:
    return NodeRecord(node.name, node.role, node.internal_ip, node.external_ip or "")
