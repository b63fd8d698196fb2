"""The top line: which cluster, where, which Kubernetes, how far along, whether it is healthy,
for how long, and (cloud providers) what it costs per hour."""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from khwtui.core.events import FAILED, PASSED, RUNNING, UNVERIFIED
from khwtui.model.config import Config
from khwtui.tui.marks import NODE_MARKS, STAGE_MARKS, duration, status_style
from khwtui.tui.progress import Progress


def where(config: Config) -> str:
    """The provider and its place: "gcp us-west1-c", "local", "machines (5 hosts)"."""
    kind = config.provider.kind
    if kind == "gcp":
        return f"gcp {config.gcp.zone or config.gcp.region or '(zone from gcloud)'}"
    if kind == "machines":
        return f"machines ({len(config.machines.hosts)} hosts)"
    return kind


class BuildHeader(Widget):
    DEFAULT_CSS = """
    BuildHeader {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
    }
    """

    def __init__(
        self,
        config: Config,
        progress: Progress,
        clock: Callable[[], float],
        *,
        running: Callable[[], bool],
        cost: Callable[[], float | None] | None = None,
    ) -> None:
        super().__init__(id="header")
        self._config = config
        self._progress = progress
        self._clock = clock
        self._is_running = running
        self._cost = cost

    def left(self, room: int) -> str:
        """The identity line; it drops the program's name when room is short."""
        c = self._config
        text = f" {c.cluster.name} · {where(c)} · k8s v{c.cluster.kubernetes_version}"
        return f" khwtui ·{text}" if len(text) + len(" khwtui ·") <= room else text

    @property
    def right(self) -> Text:
        """"⟳ etcd · 4/13 stages · 0:58": what runs, how far, what failed or is unverified, how long."""
        p = self._progress
        variables = self.app.theme_variables
        parts: list[Text] = []
        running = p.running
        if self._is_running() and running:
            parts.append(Text(f"{STAGE_MARKS[RUNNING]} {running.info.name}", style=status_style(RUNNING, variables)))
        done = Text(f"{p.done}/{len(p.stages)} stages")
        if p.count(PASSED) == len(p.stages):
            done = Text.assemble((STAGE_MARKS[PASSED] + " ", status_style(PASSED, variables)), done)
        parts.append(done)
        parts += [Text(f"{STAGE_MARKS[FAILED]} {s.info.name} failed", style=status_style(FAILED, variables)) for s in p.with_status(FAILED)]
        unverified = p.count(UNVERIFIED)
        if unverified:
            parts.append(Text(f"{STAGE_MARKS[UNVERIFIED]} {unverified} unverified", style=status_style(UNVERIFIED, variables)))
        health = self.health
        if health is not None:
            parts.append(health)
        elapsed = p.elapsed(self._clock())
        if elapsed is not None:
            parts.append(Text(duration(elapsed)))
        cost = self._cost() if self._cost is not None else None
        if cost is not None:
            parts.append(Text(f"${cost:.2f}/h"))
        return Text(" · ").join(parts) + " "

    @property
    def health(self) -> Text | None:
        """"● probes ok" or "✖ 2 probes failing", once a round probed something."""
        board, variables = self._progress.health, self.app.theme_variables
        if board.empty:
            return None
        failing = len(board.failing())
        if failing:
            noun = "probe" if failing == 1 else "probes"
            return Text(f"{STAGE_MARKS[FAILED]} {failing} {noun} failing", style=status_style(FAILED, variables))
        return Text.assemble((NODE_MARKS[PASSED] + " ", status_style(PASSED, variables)), "probes ok")

    def render(self) -> Table:
        grid = Table.grid(expand=True)
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        grid.add_column(no_wrap=True, justify="right")
        right = self.right
        grid.add_row(Text(self.left(self.size.width - right.cell_len), style="bold"), right)
        return grid
