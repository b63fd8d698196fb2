"""The log pane: a bounded tail of remote output, filtered by node and stage, with follow
mode and search.

Lines are written in batches with `Log.write_lines` (never one call per line). The pane
follows the tail until the user scrolls up ("[follow ▼]" turns into "[paused ▲]"); End
(or scrolling back to the bottom) follows again. `/` opens a search box: typing jumps to the
newest match and highlights every match, Enter steps to older ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.highlighter import Highlighter
from rich.style import Style
from rich.text import Text
from textual import getters
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Input, Log

from khwtui.core.events import CheckResult, LogLines
from khwtui.tui.log_store import STREAM_MARKS, LineFormat, LogFilter, LogStore
from khwtui.tui.marks import STAGE_MARKS, THEME_COLOURS

MAX_LINES = 5000
FOLLOWING, PAUSED = "[follow ▼]", "[paused ▲ · End follows]"
MARK_COLOURS = {STREAM_MARKS["cmd"]: "accent", STREAM_MARKS["err"]: "error"} | {
    glyph: THEME_COLOURS[status] for status, glyph in STAGE_MARKS.items() if status in THEME_COLOURS
}


class LogHighlighter(Highlighter):
    """Colours each line's mark column and every match of the current search."""

    def __init__(self) -> None:
        self.mark_column = 0
        self.colours: dict[str, str] = {}
        self.pattern: re.Pattern[str] | None = None

    def highlight(self, text: Text) -> None:
        colour = self.colours.get(text.plain[self.mark_column : self.mark_column + 1])
        if colour:
            text.stylize(Style(color=colour, bold=True), self.mark_column, self.mark_column + 1)
        if self.pattern is not None:
            text.highlight_regex(self.pattern, style="black on yellow")


class TailLog(Log):
    """A Log that keeps its last line in view when the pane changes size while following."""

    following = True  # kept in step by the pane

    def on_resize(self) -> None:
        if self.following:
            self.scroll_end(animate=False, immediate=True)


class LogPane(Vertical):
    DEFAULT_CSS = """
    LogPane {
        border: round $panel-lighten-2;
        border-title-color: $foreground;
        border-subtitle-color: $text-muted;
        height: 1fr;
        &:focus-within { border: round $primary; }
        Log { height: 1fr; scrollbar-size-vertical: 1; scrollbar-size-horizontal: 0; background: $surface; }
        #search { dock: bottom; display: none; height: 1; border: none; padding: 0 1; }
        &.-searching #search { display: block; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close_search", "close search", show=False)]

    following: reactive[bool] = reactive(True)
    """True while the view sticks to the newest line."""

    compact: reactive[bool] = reactive(False)
    """Narrow terminals: lines go without their timestamp."""

    def __init__(self, node_names: list[str], *, max_lines: int = MAX_LINES) -> None:
        super().__init__(id="logpane")
        self._node_names = node_names
        self._max_lines = max_lines
        self._store = LogStore()
        self.filter = LogFilter()
        self._format = LineFormat.for_filter(self.filter, node_names)
        self._highlighter = LogHighlighter()
        self.matches: list[int] = []
        self.match_index = -1
        self.title = self.status = ""  # the border's title and subtitle, as plain text

    def compose(self) -> ComposeResult:
        log = TailLog(max_lines=self._max_lines, highlight=True, id="log")
        log.highlighter = self._highlighter
        yield log
        yield Input(placeholder="search the log · Enter: older match · Esc: close", id="search")

    def on_mount(self) -> None:
        self._highlighter.mark_column = self._format.mark_column
        self.recolour()
        self.watch(self.log_widget, "scroll_y", self._scrolled, init=False)
        self._update_titles()

    def recolour(self) -> None:
        """Take the marks' colours from the current theme."""
        self._highlighter.colours = {glyph: self.app.theme_variables[name] for glyph, name in MARK_COLOURS.items()}
        self.log_widget.refresh()

    log_widget = getters.query_one("#log", TailLog)
    search_box = getters.query_one("#search", Input)

    # --- content ----------------------------------------------------------------------------

    def add(self, events: Iterable[LogLines | CheckResult]) -> None:
        """Keep every line; write the ones the filter shows in one batch."""
        shown = [
            self._format.line(entry)
            for event in events
            for entry in self._store.add(event)
            if self.filter.matches(entry)
        ]
        if not shown:
            return
        log = self.log_widget
        before = len(log.lines)
        log.write_lines(shown)
        self._shift_matches(before, shown, pruned=before + len(shown) - len(log.lines))

    def _shift_matches(self, start: int, added: list[str], pruned: int) -> None:
        """Keep the search results valid after `max_lines` dropped `pruned` lines from the top."""
        pattern = self._highlighter.pattern
        if pattern is None:
            return
        dropped = sum(1 for i in self.matches if i < pruned)
        self.matches = [i - pruned for i in self.matches if i >= pruned]
        self.matches += [start - pruned + j for j, line in enumerate(added) if pattern.search(line)]
        self.match_index = max(0, self.match_index - dropped) if self.matches else -1
        self._update_titles()

    def set_filter(self, flt: LogFilter) -> None:
        """Show the newest lines of another filter; the view follows the tail again."""
        self.filter = flt
        self._format = LineFormat.for_filter(flt, self._node_names, compact=self.compact)
        self._highlighter.mark_column = self._format.mark_column
        log = self.log_widget
        log.clear()
        log.write_lines([self._format.line(e) for e in self._store.select(flt, self._max_lines)], scroll_end=True)
        self.following = True
        self._search(self.search_box.value)
        self._update_titles()

    def watch_compact(self) -> None:
        if self.is_mounted:
            self.set_filter(self.filter)

    @property
    def lines(self) -> Sequence[str]:
        return self.log_widget.lines

    # --- follow mode ------------------------------------------------------------------------

    def _scrolled(self) -> None:
        self.following = self.log_widget.is_vertical_scroll_end

    def watch_following(self, following: bool) -> None:
        self.log_widget.following = following
        self._update_titles()

    def _update_titles(self) -> None:
        hint = " (Esc: all)" if self.filter != LogFilter() else ""
        self.title = f"Log · {self.filter.title}{hint}"
        status = FOLLOWING if self.following else PAUSED
        if self.matches:
            status = f"match {self.match_index + 1}/{len(self.matches)} · {status}"
        elif self.search_box.value and self.has_class("-searching"):
            status = f"no match · {status}"
        self.status = status
        self.border_title, self.border_subtitle = Text(self.title), Text(status)

    # --- search -----------------------------------------------------------------------------

    def open_search(self) -> None:
        self.add_class("-searching")
        self.search_box.focus()

    def action_close_search(self) -> None:
        self.remove_class("-searching")
        self.search_box.value = ""
        self.log_widget.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Escape closes the search box; without one it falls through to the app (clear filters).
        return self.has_class("-searching") if action == "close_search" else True

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._search(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: step to the next older match, wrapping around to the newest."""
        event.stop()
        if self.matches:
            self.match_index = (self.match_index - 1) % len(self.matches)
            self._show_match()

    def _search(self, query: str) -> None:
        pattern = re.compile(re.escape(query), re.IGNORECASE) if query else None
        self._highlighter.pattern = pattern
        self.matches = [i for i, line in enumerate(self.lines) if pattern.search(line)] if pattern else []
        self.match_index = len(self.matches) - 1
        if self.matches:
            self._show_match()
        self.log_widget.refresh()
        self._update_titles()

    def _show_match(self) -> None:
        log = self.log_widget
        line = self.matches[self.match_index]
        log.scroll_to(y=max(0, line - log.scrollable_content_region.height // 2), animate=False, immediate=True)
        self._scrolled()
        self._update_titles()

    @property
    def current_match(self) -> str | None:
        return self.lines[self.matches[self.match_index]] if self.matches else None
