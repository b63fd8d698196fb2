"""The build as the screen shows it: engine events folded into stage and node views.

Widgets render from this projection only, so a replayed `--json` stream, the `initial`
events of a resumed cluster and a live run all end up on screen the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from khwtui.events import (
    FAILED,
    PASSED,
    PENDING,
    RUNNING,
    SKIPPED,
    UNVERIFIED,
    CheckResult,
    Event,
    LogLines,
    NodeChanged,
    StageChanged,
)
from khwtui.topology import Node, Topology
from khwtui.tui.contracts import StageInfo

DONE = (PASSED, SKIPPED, UNVERIFIED)  # finished stages: they count towards "n/N stages"


@dataclass
class StageView:
    info: StageInfo
    status: str = PENDING
    detail: str = ""
    started: float | None = None
    finished: float | None = None
    last_error: str = ""  # the stage's last stderr line: the fallback for a failed row
    unverified: str = ""  # the first unverified check's reason: the fallback for a "?" row

    def duration(self, now: float) -> float | None:
        """Seconds spent: until now while running, until the end once finished (none when pending)."""
        if self.started is None or self.status == PENDING:
            return None
        end = now if self.status == RUNNING else self.finished
        return None if end is None else max(0.0, end - self.started)

    @property
    def reason(self) -> str:
        """The one line that explains this row: the error, the unverified reason or the summary."""
        if self.status == FAILED:
            return self.detail or self.last_error
        if self.status == UNVERIFIED:
            return self.detail or self.unverified
        return self.detail


@dataclass
class NodeView:
    node: Node
    status: str = PENDING
    stage: str = ""  # the stage running on it, while running
    address: str = ""  # the address the engine reported (external, once known)

    @property
    def external(self) -> str:
        ext = self.address or self.node.external_ip or ""
        return "" if ext == self.node.internal_ip else ext


@dataclass
class Change:
    """What one event touched, so the app refreshes only those rows and labels."""

    stages: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)


class Progress:
    """Stage and node state of one cluster, plus the current run's start and end."""

    def __init__(self, stages: list[StageInfo], topo: Topology) -> None:
        self.stages = {s.name: StageView(s) for s in stages}
        self.nodes = {n.name: NodeView(n) for n in topo.nodes}
        self.run_started: float | None = None
        self.run_ended: float | None = None

    def apply(self, event: Event) -> Change:
        change = Change()
        if isinstance(event, StageChanged) and event.stage in self.stages:
            self._stage(event)
            change.stages.add(event.stage)
        elif isinstance(event, NodeChanged) and event.node in self.nodes:
            view = self.nodes[event.node]
            view.status, view.stage = event.status, event.stage if event.status == RUNNING else ""
            view.address = event.address or view.address
            change.nodes.add(event.node)
        elif isinstance(event, LogLines) and event.stream == "err" and event.stage in self.stages and event.lines:
            self.stages[event.stage].last_error = event.lines[-1]
            change.stages.add(event.stage)
        elif isinstance(event, CheckResult) and event.result == UNVERIFIED and event.stage in self.stages:
            view = self.stages[event.stage]
            view.unverified = view.unverified or _one_line(event.evidence) or event.check
            change.stages.add(event.stage)
        return change

    def _stage(self, event: StageChanged) -> None:
        view = self.stages[event.stage]
        if event.status == RUNNING and view.status != RUNNING:  # a later RUNNING only updates the detail
            view.started, view.finished, view.last_error, view.unverified = event.at or None, None, "", ""
        elif view.status == RUNNING:
            view.finished = event.at or None
        view.status, view.detail = event.status, _one_line(event.detail)

    # --- the current run ------------------------------------------------------------------

    def start_run(self, now: float) -> None:
        self.run_started, self.run_ended = now, None

    def end_run(self, now: float) -> None:
        self.run_ended = now

    def elapsed(self, now: float) -> float | None:
        if self.run_started is None:
            return None
        return (self.run_ended if self.run_ended is not None else now) - self.run_started

    # --- summaries ------------------------------------------------------------------------

    def count(self, *statuses: str) -> int:
        return sum(1 for s in self.stages.values() if s.status in statuses)

    @property
    def done(self) -> int:
        return self.count(*DONE)

    def with_status(self, status: str) -> list[StageView]:
        return [s for s in self.stages.values() if s.status == status]

    @property
    def running(self) -> StageView | None:
        found = self.with_status(RUNNING)
        return found[0] if found else None


def _one_line(text: str) -> str:
    """Rows and labels hold one line: the last non-blank one (where errors usually end up)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
