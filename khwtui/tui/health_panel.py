"""The health panel: the latest probe round, probe by probe, refreshed every few seconds.

Each probe: the worst result's mark, the check, how many nodes pass it (or its one-line result
when it is not per node), the round's latency and when it was checked; one line when folded
under the log, two beside it. Every failing or unverified node gets a line of its own under
its probe, saying why.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from khwtui.core.events import PASSED, HealthChanged
from khwtui.tui.health_board import HealthBoard, ProbeSummary
from khwtui.tui.marks import mark, status_style

WAITING = "the first round starts soon"
NOTHING = "nothing to probe yet: no stage is done"
DEFAULT_WIDTH = 38  # the panel's inner width beside the log
ONE_LINE_WIDTH = 60  # from this width on (folded under the log), a probe takes one line
DETAIL_WIDTH = 22  # a one-line result ("364 days left (admin)") beyond this is cut


def clock_time(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) if at else ""


def latency(ms: float | None) -> str:
    return "" if ms is None else f"{ms:.0f} ms"


class HealthPanel(VerticalScroll):
    DEFAULT_CSS = """
    HealthPanel {
        width: 40;  /* DEFAULT_WIDTH + border */
        height: 1fr;
        border: round $panel-lighten-2;
        border-title-color: $foreground;
        border-subtitle-color: $text-muted;
        background: $surface;
        scrollbar-size-vertical: 1;
        &:focus { border: round $primary; }
        #health-rows { width: 1fr; }
    }
    """

    def __init__(self, board: HealthBoard, interval: float) -> None:
        super().__init__(id="health")
        self._board = board
        self.status = ""  # the border's subtitle: probing, paused, the last round's time or error
        self.plain = ""  # what the rows say, as plain text (tests and screenshots read it)
        self.border_title = f"Health · every {interval:g} s"

    def compose(self) -> ComposeResult:
        yield Static(id="health-rows")

    def on_mount(self) -> None:
        self.redraw()

    def set_status(self, status: str) -> None:
        self.status = status
        self.border_subtitle = Text(status)

    def redraw(self) -> None:
        """Draw the board as it is now (after a round, or a theme change)."""
        rows = self._rows()
        width = self.scrollable_content_region.width or DEFAULT_WIDTH
        lines = self.app.console.render_lines(rows, self.app.console.options.update_width(width), pad=False)
        self.plain = "\n".join("".join(segment.text for segment in line).rstrip() for line in lines)
        self.query_one("#health-rows", Static).update(rows)

    def on_resize(self) -> None:
        self.redraw()

    def _rows(self) -> RenderableType:
        if self._board.rounds == 0 and self._board.empty:
            return Text(WAITING, style="dim")
        if self._board.empty:
            return Text(NOTHING, style="dim")
        width = self.scrollable_content_region.width or DEFAULT_WIDTH
        return (_one_line if width >= ONE_LINE_WIDTH else _two_lines)(self._board.summaries(), self.app.theme_variables)


def _one_line(probes: list[ProbeSummary], variables: Mapping[str, str]) -> Table:
    """Folded under the log (the whole width): one line per probe, in columns."""
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(width=1)
    grid.add_column(ratio=1)
    for justify in ("right", "right", "left"):
        grid.add_column(no_wrap=True, justify=justify)
    for probe in probes:
        grid.add_row(mark(probe.status, variables), _check(probe), _result(probe), latency(probe.latency_ms), clock_time(probe.at))
        for problem in probe.problems:
            grid.add_row("", _problem(problem, variables), "", "", "")
    return grid


def _two_lines(probes: list[ProbeSummary], variables: Mapping[str, str]) -> Group:
    """Beside the log (narrow): the check and its result, then latency and time below it. Each
    probe is laid out on its own, so one long result does not squeeze every check."""
    parts: list[RenderableType] = []
    for probe in probes:
        head = Table.grid(padding=(0, 1), expand=True)
        head.add_column(width=1)
        head.add_column(ratio=1)
        head.add_column(no_wrap=True, justify="right")
        head.add_row(mark(probe.status, variables), _check(probe), _result(probe))
        facts = (latency(probe.latency_ms), clock_time(probe.at))
        parts += [head, Text("  " + " · ".join(f for f in facts if f), style="dim", no_wrap=True, overflow="ellipsis")]
        parts += [Padding(_problem(problem, variables), (0, 0, 0, 2)) for problem in probe.problems]
    return Group(*parts)


def _check(probe: ProbeSummary) -> Text:
    return Text(probe.check, no_wrap=True, overflow="ellipsis")


def _problem(problem: HealthChanged, variables: Mapping[str, str]) -> Text:
    """Under its probe: the node and why ("controller-1: context deadline exceeded"), wrapped."""
    why = ": ".join(part for part in (problem.node, problem.detail or problem.result) if part)
    return Text(why, style=status_style(problem.result, variables))


def _result(probe: ProbeSummary) -> Text:
    """"2/2" nodes pass; a probe that is not per node shows its own one-line result instead."""
    if probe.per_node:
        return Text(f"{probe.passing}/{len(probe.results)}")
    detail = probe.results[0].detail if probe.status == PASSED else ""
    return Text(detail[:DETAIL_WIDTH] + ("…" if len(detail) > DETAIL_WIDTH else ""))

