"""What the TUI needs from the rest of khwtui, in one place so the app never imports the engine.

The engine (khwtui/engine/runner.py) satisfies `EngineLike` structurally; tests use a fake that
replays a recorded `--json` stream through the same sink. `Services` holds everything else the
app can do besides building; each is optional, and a missing one is simply not offered.
launch.py wires the real objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from khwtui.core.events import HealthChanged, Sink
from khwtui.providers.base import PlannedResource
from khwtui.stages import (
    StageInfo,  # one row of the stage checklist: name, title, description
)
from khwtui.transport.node_ssh import ShellTarget

if TYPE_CHECKING:
    from khwtui.artifacts.pki import CertRow

__all__ = ["EngineLike", "Services", "ShellTarget", "StageInfo", "TeardownLike"]


class EngineLike(Protocol):
    """Runs the stage graph and reports everything it does as events to `sink`."""

    stages: list[StageInfo]

    async def run(
        self,
        sink: Sink,
        *,
        only: list[str] | None = None,
        start: str | None = None,
        until: str | None = None,
    ) -> int:
        """Run the stages (all, `only` these, from `start`, up to `until`); returns the exit code."""
        ...

    def cancel(self) -> None:
        """Stop cleanly; the running `run()` then returns 130."""
        ...


class TeardownLike(Protocol):
    """What `khwtui down` uses: the provider's plan, and the deletion of exactly that plan."""

    def teardown_plan(self) -> list[PlannedResource]: ...

    async def teardown(self, log: Callable[[str], None]) -> None: ...


@dataclass(frozen=True)
class Services:
    """health: one probe round (khwtui.engine.health.probe_round); certs: the `khwtui certs` rows;
    teardown: the provider's plan and teardown; shell: a node's login (None: not reachable);
    cost_per_hour: the running cost of a cloud cluster in USD (None: unknown); api_address: the
    API endpoint's address as the state knows it now (a cloud's static address appears with compute);
    explain: a stage's explanation as text (`khwtui explain STAGE`), built in a worker thread;
    renew: `khwtui certs --renew` for the certificates view."""

    health: Callable[[], Awaitable[list[HealthChanged]]] | None = None
    certs: Callable[[], Sequence[CertRow]] | None = None
    teardown: TeardownLike | None = None
    shell: Callable[[str], ShellTarget | None] | None = None
    cost_per_hour: Callable[[], float | None] | None = None
    api_address: Callable[[], str | None] | None = None
    explain: Callable[[str], str] | None = None
    renew: Callable[[list[str]], Awaitable[str]] | None = None  # re-issue and roll out; returns a summary line
