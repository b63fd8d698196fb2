"""The contract every provider meets, so the engine and the stages never ask which one runs.

A provider makes (or adopts) the machines and tells the rest of khwtui how to reach them: names,
roles, addresses, the SSH endpoint and the pinned host key. Everything else is a stage's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from khwtui.core.errors import UserError

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class NodeEndpoint:
    """One node as SSH sees it; `host_key` is pinned ("ssh-ed25519 AAAA...", no comment)."""

    name: str
    role: str
    internal_ip: str
    external_ip: str | None
    ssh_host: str
    ssh_port: int
    host_key: str


@dataclass(frozen=True)
class PlannedResource:
    """One thing a provider will create (plan) or delete (teardown plan)."""

    kind: str
    name: str
    detail: str = ""
    stage: str = ""  # the stage that makes it, when not the compute stage (gcp's front end, routes, ...)

    @property
    def described(self) -> str:
        return f"{self.detail} ({self.stage} stage)" if self.stage else self.detail


@dataclass(frozen=True)
class Plan:
    resources: tuple[PlannedResource, ...]
    hourly_usd: float | None = None
    notes: tuple[str, ...] = ()


class PreflightError(UserError):
    """Everything missing before a provider may create anything: one line each, with the fix."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class LeftInPlace(UserError):
    """Teardown deleted everything of the cluster; these resources hold its names without its
    marker, so they were left where they are: one line each, with the fix."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class Provider(Protocol):
    kind: str

    def plan(self) -> Plan:
        """What ensure() would create, and what it costs; no side effects."""
        ...

    async def preflight(self) -> None:
        """Raise PreflightError (exit 2) naming every missing prerequisite and its fix."""
        ...

    async def ensure(self, log: LogFn) -> list[NodeEndpoint]:
        """Create or adopt every node; idempotent; host keys are known before it returns."""
        ...

    async def nodes(self) -> list[NodeEndpoint]:
        """The nodes that exist now; creates nothing."""
        ...

    def api_address(self) -> str | None:
        """The address clients use for the API server, if known."""
        ...

    def teardown_plan(self) -> list[PlannedResource]:
        """Exactly what teardown() would delete, for the confirmation prompt."""
        ...

    async def teardown(self, log: LogFn) -> None:
        """Delete exactly what teardown_plan() lists; already gone is fine."""
        ...

    def stop_notes(self) -> list[str]:
        """What `stop` does and what still costs while the nodes are off (for the confirmation)."""
        ...

    async def stop(self, log: LogFn) -> None:
        """Power every node off, keeping its disk, addresses and host key; already off is fine.
        A provider that cannot (machines) raises a UserError (exit 2) before doing anything."""
        ...

    async def start(self, log: LogFn) -> list[NodeEndpoint]:
        """Power the nodes on again and return them as ensure() does (addresses read back)."""
        ...


class CloudNetwork(Protocol):
    """What a cloud provider (gcp) adds for later stages, whose nodes cannot do it themselves:
    the API load balancer, the pod routes, the NodePort firewall rules. Each ensure is
    idempotent; each *_problems call only reads, and is empty when all is as planned."""

    async def ensure_frontend(self, log: LogFn) -> None: ...

    async def frontend_problems(self) -> list[str]: ...

    async def ensure_routes(self, log: LogFn) -> None: ...

    async def routes_problems(self) -> list[str]: ...

    async def ensure_firewall(self, name: str, port: int) -> None: ...


class Priced(Protocol):
    """A provider that can price what runs now (gcp): USD per hour, None when it cannot tell."""

    def running_cost(self) -> float | None: ...
