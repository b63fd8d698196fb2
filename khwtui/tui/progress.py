"""The build as the screen shows it: engine events folded into stage and node views.

Widgets render from this projection only, so a replayed `--json` stream, the `initial`
events of a resumed cluster and a live run all end up on screen the same way. Live health
(the latest probe round) and a teardown (shown as one more row) are folded in here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from khwtui.core.events import (
    FAILED,
    PASSED,
    PENDING,
    RUNNING,
    SKIPPED,
    UNVERIFIED,
    CheckResult,
    Event,
    HealthChanged,
    LogLines,
    NodeChanged,
    StageChanged,
    Status,
    TransferProgress,
)
from khwtui.model.topology import Node, Topology
from khwtui.tui.contracts import StageInfo
from khwtui.tui.health_board import HealthBoard

DONE = (PASSED, SKIPPED, UNVERIFIED)  # finished stages: they count towards "n/N stages"
TEARDOWN = StageInfo("teardown", "teardown", "delete every resource of the cluster")


@dataclass
class StageView:
    info: StageInfo
    status: Status = PENDING
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
    status: Status = PENDING
    stage: str = ""  # the stage running on it, while running
    address: str = ""  # the address the engine reported (external, once known)
    transfer: TransferProgress | None = None  # the release file on its way to it, until it has arrived

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
        self.health = HealthBoard()
        self.teardown: StageView | None = None  # the teardown row, once one was started
        self.run_started: float | None = None
        self.run_ended: float | None = None

    @property
    def rows(self) -> list[StageView]:
        """The stage list's rows: every stage, then the teardown if one ran in this session."""
        return [*self.stages.values(), *([self.teardown] if self.teardown else [])]

    def view(self, name: str) -> StageView | None:
        if self.teardown is not None and name == TEARDOWN.name:
            return self.teardown
        return self.stages.get(name)

    def begin_teardown(self) -> None:
        self.teardown = StageView(TEARDOWN)

    def apply(self, event: Event) -> Change:
        change = Change()
        if isinstance(event, StageChanged) and (view := self.view(event.stage)):
            _apply_stage(view, event)
            change.stages.add(event.stage)
        elif isinstance(event, NodeChanged) and event.node in self.nodes:
            node = self.nodes[event.node]
            node.status, node.stage = event.status, event.stage if event.status == RUNNING else ""
            node.address = event.address or node.address
            node.transfer = node.transfer if event.status == RUNNING else None
            change.nodes.add(event.node)
        elif isinstance(event, TransferProgress) and event.node in self.nodes:
            arrived = event.total and event.done >= event.total
            self.nodes[event.node].transfer = None if arrived else event
            change.nodes.add(event.node)
        elif isinstance(event, LogLines) and event.stream == "err" and event.lines and (view := self.view(event.stage)):
            view.last_error = event.lines[-1]
            change.stages.add(event.stage)
        elif isinstance(event, CheckResult) and event.result == UNVERIFIED and event.stage in self.stages:
            stage = self.stages[event.stage]
            stage.unverified = stage.unverified or _one_line(event.evidence) or event.check
            change.stages.add(event.stage)
        elif isinstance(event, HealthChanged):
            change = self._health_change(*self.health.update(event))
        return change

    def health_round(self, events: list[HealthChanged]) -> Change:
        """A whole probe round replaces the previous one."""
        return self._health_change(*self.health.replace(events))

    def _health_change(self, stages: set[str], nodes: set[str]) -> Change:
        return Change(stages & set(self.stages), nodes & set(self.nodes))

    def stage_unhealthy(self, name: str) -> str:
        """Why a done stage's probe fails right now ("" while healthy, or while it is not done):
        its row shows as failed until the next round says it recovered."""
        view = self.stages.get(name)
        return self.health.stage_problem(name) if view and view.status in (PASSED, UNVERIFIED) else ""

    def node_unhealthy(self, name: str) -> str:
        """The check failing on a node right now ("" while healthy or while a stage runs there)."""
        return self.health.node_problem(name) if self.nodes[name].status != RUNNING else ""

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

    def count(self, *statuses: Status) -> int:
        return sum(1 for s in self.stages.values() if s.status in statuses)

    @property
    def done(self) -> int:
        return self.count(*DONE)

    def with_status(self, status: Status) -> list[StageView]:
        return [s for s in self.stages.values() if s.status == status]

    @property
    def running(self) -> StageView | None:
        """The stage (or the teardown) running now."""
        return next((s for s in self.rows if s.status == RUNNING), None)


def _apply_stage(view: StageView, event: StageChanged) -> None:
    if event.status == RUNNING and view.status != RUNNING:  # a later RUNNING only updates the detail
        view.started, view.finished, view.last_error, view.unverified = event.at or None, None, "", ""
    elif view.status == RUNNING:
        view.finished = event.at or None
    view.status, view.detail = event.status, _one_line(event.detail)


def _one_line(text: str) -> str:
    """Rows and labels hold one line: the last non-blank one (where errors usually end up)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
