"""A node's full log file (state_dir/logs/<node>.log) in a scrollable view.

The log pane keeps only a bounded tail per node and stage; this reads the whole file the
engine wrote, newest line in view first. It is a view for reading, so long lines (commands,
apt output) wrap at the view's width instead of running off its edge.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Log

from khwtui.tui.view_screen import ViewScreen

LOCAL_LOG = "khwtui"  # the operator's machine's log file stem (node "")
CONTINUATION = "    "  # a wrapped line's later rows start indented, so each log line stays one block


def log_path(logs_dir: Path, node: str) -> Path:
    return logs_dir / f"{node or LOCAL_LOG}.log"


def read_lines(path: Path) -> tuple[list[str], str]:
    """(lines, problem): a missing or unreadable file is a one-line explanation, not an error."""
    try:
        text = path.read_text(encoding="utf-8", errors="backslashreplace")
    except FileNotFoundError:
        return [], f"no log yet: {path} does not exist (nothing ran on this node)"
    except OSError as exc:
        return [], f"cannot read {path}: {exc.strerror}"
    return text.splitlines(), ""


def wrap_line(line: str, width: int) -> list[str]:
    """`line` in rows of at most `width` characters, broken at spaces where it can be; every
    character is kept, so the rows without their CONTINUATION indent join back into the line."""
    if len(line) <= width or width <= len(CONTINUATION):
        return [line]
    return textwrap.wrap(
        line, width, subsequent_indent=CONTINUATION, expand_tabs=False, replace_whitespace=False, drop_whitespace=False, break_on_hyphens=False
    )


class WrappedLog(Log):
    """A Log of `source` lines wrapped at its own width, wrapped again when that width changes."""

    def __init__(self, source: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.wrapped_at = 0

    def on_resize(self, event: events.Resize) -> None:
        width = self.scrollable_content_region.width
        if width > 0 and width != self.wrapped_at:
            self.wrapped_at = width
            self.clear()
            self.write_lines([row for line in self.source for row in wrap_line(line, width)], scroll_end=True)


class NodeLogScreen(ViewScreen):
    DEFAULT_CSS = """
    NodeLogScreen Log { height: 1fr; scrollbar-size-vertical: 1; scrollbar-size-horizontal: 0; background: $surface; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,n", "close", "close")]

    def __init__(self, node: str, path: Path) -> None:
        super().__init__()
        self.node = node
        self.path = path
        self.lines, self.problem = read_lines(path)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"{self.path.name} · {len(self.lines)} lines"
            dialog.border_subtitle = "↑↓ PgUp PgDn Home End scroll · Esc close"
            yield WrappedLog(self.lines or [self.problem], highlight=False, id="node-log")

    def on_mount(self) -> None:
        self.query_one(WrappedLog).focus()
