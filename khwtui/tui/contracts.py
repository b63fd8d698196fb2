"""What the TUI needs from the engine, in one place so the app never imports the engine.

The engine (khwtui/engine.py) satisfies `EngineLike` structurally; tests use a fake that
replays a recorded `--json` stream through the same sink.
"""

from __future__ import annotations

from typing import Protocol

from khwtui.events import Sink
from khwtui.stages import StageInfo  # one row of the stage checklist: name, title, description

__all__ = ["EngineLike", "StageInfo"]


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
