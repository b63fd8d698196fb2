"""The explanation of one stage (`e` on a stage): what it does and why, the cloud resources it
makes, the files it places on each node, the commands it runs and how it is checked, with this
cluster's values — the text of `khwtui explain STAGE`, in a scrollable, searchable view.

The text is built in a worker thread (it renders the cluster's files), so the screen opens at
once and says so while it loads. `/` searches (case-insensitive); Enter or `n` steps to the next
match and selects it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static, TextArea
from textual.widgets.text_area import Selection

from khwtui.tui.view_screen import ViewScreen

LOADING = "Reading this cluster's files…"


class ExplainScreen(ViewScreen):
    DEFAULT_CSS = """
    ExplainScreen {
        #explain-text { height: 1fr; border: none; padding: 0 1; background: $surface; scrollbar-size-vertical: 1; }
        #explain-search { display: none; height: 1; border: none; padding: 0 1; margin: 0; }
        #explain-search.-open { display: block; }
        #explain-status { height: 1; padding: 0 1; background: $boost; color: $text-muted; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "close"),
        Binding("slash", "search", "search", key_display="/"),
        Binding("n", "next_match", "next match"),
    ]

    def __init__(self, stage: str, load: Callable[[str], str]) -> None:
        super().__init__()
        self.stage = stage
        self._load = load
        self.text = ""
        self.matches: list[tuple[tuple[int, int], tuple[int, int]]] = []
        self.current = -1

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Explain · {self.stage}"
            dialog.border_subtitle = "↑↓ PgUp PgDn scroll · / search · n next · Esc close"
            yield Input(placeholder="search this explanation, Enter: next match", id="explain-search")
            yield Static(LOADING, id="explain-status")
            yield TextArea("", id="explain-text", read_only=True, soft_wrap=True, show_line_numbers=False, compact=True)

    def on_mount(self) -> None:
        self.area.focus()
        self.load()

    @property
    def area(self) -> TextArea:
        return self.query_one("#explain-text", TextArea)

    @property
    def status(self) -> Static:
        return self.query_one("#explain-status", Static)

    @work(thread=True, exclusive=True, group="explain")
    def load(self) -> None:
        try:
            text = self._load(self.stage)
        except Exception as exc:  # noqa: BLE001 - any failure to read the cluster is shown, not raised into the app
            self.app.call_from_thread(self._show, "", f"cannot explain {self.stage}: {exc}")
            return
        self.app.call_from_thread(self._show, text, "")

    def _show(self, text: str, problem: str) -> None:
        self.text = text
        self.area.load_text(text)
        self.area.move_cursor((0, 0))
        lines = len(text.splitlines())
        self.status.update(problem or f"{lines} lines · this cluster's own values · khwtui explain {self.stage} --markdown prints it")

    # --- search ---------------------------------------------------------------------------------

    def action_search(self) -> None:
        box = self.query_one("#explain-search", Input)
        box.add_class("-open")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.find(event.value)
        self.action_next_match()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.find(event.value)

    def find(self, query: str) -> None:
        """Every (start, end) location of `query` in the text, case-insensitively."""
        self.matches, self.current = [], -1
        needle = query.casefold()
        if needle:
            for row, line in enumerate(self.text.splitlines()):
                start = line.casefold().find(needle)
                while start >= 0:
                    self.matches.append(((row, start), (row, start + len(needle))))
                    start = line.casefold().find(needle, start + 1)
        self.status.update(f"{len(self.matches)} matches for {query!r}" if query else "")

    def action_next_match(self) -> None:
        if not self.matches:
            return
        self.current = (self.current + 1) % len(self.matches)
        start, end = self.matches[self.current]
        self.area.selection = Selection(start, end)
        self.area.scroll_cursor_visible(center=True, animate=False)
        self.status.update(f"match {self.current + 1} of {len(self.matches)} · line {start[0] + 1} · Enter or n: next")
