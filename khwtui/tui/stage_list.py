"""The stage checklist: one row per stage with its mark, title, one-line detail and time.

A failed row carries the stage's last error line and an unverified row its reason, right on
the row; a done stage whose live probe fails shows ✖ and the failing probe until it recovers.
A teardown appears as one more row. Enter (or a click) on a row filters the log to that stage;
again clears it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from khwtui.core.events import FAILED, PENDING, RUNNING, SKIPPED, UNVERIFIED, Status
from khwtui.tui.marks import duration, mark, status_style
from khwtui.tui.progress import Progress, StageView

TIME_WIDTH = 7  # 1:02:03
MIN_DETAIL = 10
MAX_REASON_LINES = 3


class StageList(DataTable):
    DEFAULT_CSS = """
    StageList {
        border: round $panel-lighten-2;
        border-title-color: $foreground;
        height: 1fr;
        scrollbar-size-vertical: 1;
        &:focus { border: round $primary; }
    }
    """

    @dataclass
    class StageSelected(Message):
        """The user chose a row: filter the log to `stage` (None: show every stage again)."""

        stage: str | None

    def __init__(self, progress: Progress, now: float) -> None:
        super().__init__(id="stages", cursor_type="row", zebra_stripes=False)
        self.border_title = "Stages"
        self._progress = progress
        self._now = now
        self._built_width = 0
        self.chosen: str | None = None

    def on_mount(self) -> None:
        self.rebuild()

    def on_resize(self) -> None:
        if self.scrollable_content_region.width != self._built_width:
            self.rebuild()

    @property
    def _title_width(self) -> int:
        return max(len(v.info.title) for v in self._progress.rows)

    @property
    def _detail_width(self) -> int:
        fixed = 1 + self._title_width + TIME_WIDTH + 2 * self.cell_padding * 4
        return max(MIN_DETAIL, self.scrollable_content_region.width - fixed)

    def rebuild(self) -> None:
        """(Re)build the columns to fit the width: the detail column takes what is left."""
        self._built_width = self.scrollable_content_region.width
        row = self.cursor_row
        self.clear(columns=True)
        self.add_column("", key="mark", width=1)
        self.add_column("stage", key="stage", width=self._title_width)
        self.add_column("detail", key="detail", width=self._detail_width)
        self.add_column(Text("time", justify="right"), key="time", width=TIME_WIDTH)
        for view in self._progress.rows:
            self.add_row(*self._cells(view).values(), key=view.info.name, height=self._height(view))
        self.move_cursor(row=row)

    def _height(self, view: StageView) -> int:
        return len(self._detail(view).split())

    def _cells(self, view: StageView) -> dict[str, Text]:
        variables = self.app.theme_variables
        title = Text(view.info.title, style="bold" if view.status == RUNNING else "")
        if self.chosen == view.info.name:
            title.stylize("underline")
        unhealthy = self._progress.stage_unhealthy(view.info.name)
        return {
            "mark": mark(FAILED if unhealthy else view.status, variables),
            "stage": title,
            "detail": self._detail(view),
            "time": Text(duration(view.duration(self._now)), justify="right"),
        }

    def _detail(self, view: StageView) -> Text:
        """One line; the reason of a failed or unverified row, or of a failing probe, wraps onto
        up to three."""
        width = self._detail_width
        unhealthy = self._progress.stage_unhealthy(view.info.name)
        if unhealthy:
            return self._reason(f"probe failing: {unhealthy}", FAILED)
        if view.status in (FAILED, UNVERIFIED) and view.reason:
            return self._reason(view.reason, view.status)
        style = "dim" if view.status in (PENDING, SKIPPED) else ""
        text = Text(view.detail or view.info.description, style=style)
        text.truncate(width, overflow="ellipsis")
        return text

    def _reason(self, reason: str, status: Status) -> Text:
        width = self._detail_width
        lines = list(Text(reason, style=status_style(status, self.app.theme_variables)).wrap(self.app.console, width))
        if len(lines) > MAX_REASON_LINES:
            lines = lines[:MAX_REASON_LINES]
            lines[-1].append("…")
        for line in lines:
            line.truncate(width, overflow="ellipsis")
        return Text("\n").join(lines)

    def refresh_stage(self, name: str) -> None:
        view = self._progress.view(name)
        if view is None:
            return
        if RowKey(name) not in self.rows or self.rows[RowKey(name)].height != self._height(view):
            self.rebuild()  # row heights are fixed once added
        else:
            for column, cell in self._cells(view).items():
                self.update_cell(name, column, cell)
        if view.status in (RUNNING, FAILED, UNVERIFIED):
            self.call_after_refresh(self.reveal, name)

    def reveal(self, name: str) -> None:
        """Scroll (without moving the cursor) so the row is in view: on short terminals the
        list scrolls, and the running, failed or unverified stage must stay visible."""
        top = sum(row.height for row in self.ordered_rows[: self.get_row_index(name)])
        height = self.rows[RowKey(name)].height
        visible = self.scrollable_content_region.height - (self.header_height if self.show_header else 0)
        if not self.scroll_y <= top <= self.scroll_y + visible - height:
            self.scroll_to(y=max(0, top + height - visible), animate=False)

    def tick(self, now: float) -> None:
        """Advance the running stages' clocks."""
        self._now = now
        for view in (v for v in self._progress.rows if v.status == RUNNING):
            self.update_cell(view.info.name, "time", Text(duration(view.duration(now)), justify="right"))

    @property
    def highlighted(self) -> str | None:
        """The stage under the cursor (the one `s` and `f` act on; never the teardown row, which is last)."""
        names = list(self._progress.stages)
        return names[self.cursor_row] if 0 <= self.cursor_row < len(names) else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        name = event.row_key.value
        previous, self.chosen = self.chosen, None if self.chosen == name else name
        for stage in {previous, name}:
            if stage is not None:
                self.refresh_stage(stage)
        self.post_message(self.StageSelected(self.chosen))

    def clear_choice(self) -> None:
        previous, self.chosen = self.chosen, None
        if previous:
            self.refresh_stage(previous)
