"""What a stage works with: the cluster, the SSH runner, the provider, events and the file record.

Stages never talk to asyncssh, the state file or the event sink directly; they call `sh`,
`place`, `drifted` and `each` here, so every command is logged under its node and stage and
every file placed is recorded in state (which makes reruns cheap and tells `down` what to remove).
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Awaitable, Callable, Iterable, TypeVar

from khwtui.context import Cluster
from khwtui.events import FAILED, PASSED, RUNNING, LogLines, NodeChanged, Sink
from khwtui.render import NodeFile
from khwtui.state import FileRecord, NodeRecord
from khwtui.topology import Node, Topology

T = TypeVar("T")
NODE_CONCURRENCY = 16  # nodes worked on at once; the SSH runner bounds channels per node itself


@dataclass
class RunContext:
    cluster: Cluster
    emit: Sink
    provider: object  # providers.base.Provider (kept untyped to avoid an import cycle)
    remote_factory: Callable[[Callable[[str, str, str], None]], object]
    clock: Callable[[], float] = time.time
    stage: str = ""
    deliveries: dict = field(default_factory=dict)  # release origins -> delivery.Choice, decided once per run
    _remote: object | None = field(default=None, repr=False)

    # --- the cluster ----------------------------------------------------------------------

    @property
    def config(self):  # noqa: ANN201 - Config
        return self.cluster.config

    @property
    def state(self):  # noqa: ANN201 - State
        return self.cluster.state

    @property
    def topo(self) -> Topology:
        return self.cluster.topology

    def save(self) -> None:
        self.cluster.state_dir.save(self.cluster.state)

    @cached_property
    def artifacts(self):  # noqa: ANN201 - nodefiles.Artifacts
        """Certificates, kubeconfigs and the encryption key as the offline stages made them."""
        from khwtui.encryption import load_or_create_key
        from khwtui.nodefiles import Artifacts
        from khwtui.pki import Pki

        folder = self.cluster.state_dir
        return Artifacts(self.topo, Pki(folder.pki_dir, self.config), load_or_create_key(folder.pki_dir))

    def forget_artifacts(self) -> None:
        """Drop the cached artifacts after the PKI or the addresses changed."""
        self.__dict__.pop("artifacts", None)

    # --- events and logs ------------------------------------------------------------------

    def log(self, node: str, line: str, stream: str = "out") -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.clock()))
        self.cluster.state_dir.append_log(node, [f"{stamp} [{self.stage}] {'$ ' if stream == 'cmd' else ''}{line}"])
        self.emit(LogLines(node, self.stage, (line,), stream, self.clock()))

    def node_status(self, node: str, status: str, detail: str = "") -> None:
        address = self.state.nodes[node].internal_ip if node in self.state.nodes else ""
        self.emit(NodeChanged(node, status, self.stage, detail, address, self.clock()))

    # --- SSH ------------------------------------------------------------------------------

    @property
    def remote(self):  # noqa: ANN201 - remote.Remote
        if self._remote is None:
            self._remote = self.remote_factory(self.log)
        return self._remote

    def host(self, node: str):  # noqa: ANN201 - remote.Host
        from khwtui.remote import Host

        record = self.state.nodes[node]
        return Host(node, record.ssh_host or record.internal_ip, record.ssh_port, self.config.ssh.user, record.host_key)

    async def sh(self, node: str, command: str, *, sudo: bool = True, timeout: float | None = 300, check: bool = True):  # noqa: ANN201
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

    async def place(self, node: str, files: Iterable[NodeFile]) -> list[str]:
        """Put every file that differs; record all of them. Returns the paths that changed."""
        wanted = list(files)
        changed = []
        for f in await self.drifted(node, wanted):
            await self.remote.put(self.host(node), f.content, f.path, mode=f.mode, owner=f.owner, group=f.group)
            changed.append(f.path)
        record = self.state.nodes[node]
        for f in wanted:
            record.files[f.path] = FileRecord(f.path, hashlib.sha256(f.content).hexdigest(), f.mode, f.owner, f.group, self.stage)
        if changed:
            self.save()
        return changed

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
        return results  # type: ignore[return-value]


def _fingerprint(f: NodeFile) -> str:
    return f"{hashlib.sha256(f.content).hexdigest()} {f.mode:o} {f.owner} {f.group}"


def node_record(node: Node) -> NodeRecord:
    return NodeRecord(node.name, node.role, node.internal_ip, node.external_ip or "")
