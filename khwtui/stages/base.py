"""The stage framework: every stage checks first, applies only what differs, and reports truly.

A check returns one Outcome (khwtui.core.outcome) per thing it looked at, per node where it applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from khwtui.core.outcome import Outcome

if TYPE_CHECKING:
    from khwtui.toolkit.run_context import RunContext


class Stage:
    """Base class: subclasses implement check and apply (and probe); the table in
    khwtui.stages holds each stage's name, title, description and inputs."""

    async def check(self, run: RunContext) -> list[Outcome]:
        raise NotImplementedError

    async def apply(self, run: RunContext) -> None:
        raise NotImplementedError

    async def probe(self, run: RunContext) -> list[Outcome]:
        """Cheap live health; stages without a meaningful probe report nothing."""
        return []
