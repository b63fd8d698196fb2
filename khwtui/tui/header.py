"""The top line: which cluster, where, which Kubernetes, how far along and for how long."""

from __future__ import annotations

from typing import Callable

from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from khwtui.config import Config
from khwtui.events import FAILED, PASSED, RUNNING, UNVERIFIED
from khwtui.tui.marks import STAGE_MARKS, duration, status_style
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

    def __init__(self, config: Config, progress: Progress, clock: Callable[[], float], *, running: Callable[[], bool]) -> None:
        super().__init__(id="header")
        self._config = config
        self._progress = progress
        self._clock = clock
        self._is_running = running

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
        elapsed = p.elapsed(self._clock())
        if elapsed is not None:
            parts.append(Text(duration(elapsed)))
        return Text(" · ").join(parts) + " "

    def render(self) -> Table:
        grid = Table.grid(expand=True)
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        grid.add_column(no_wrap=True, justify="right")
        right = self.right
        grid.add_row(Text(self.left(self.size.width - right.cell_len), style="bold"), right)
        return grid
