"""A node's full log file (state_dir/logs/<node>.log) in a scrollable view.

The log pane keeps only a bounded tail per node and stage; this reads the whole file the
engine wrote, newest line in view first.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Log

from khwtui.tui.view_screen import ViewScreen

LOCAL_LOG = "khwtui"  # the operator's machine's log file stem (node "")


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


class NodeLogScreen(ViewScreen):
    DEFAULT_CSS = """
    NodeLogScreen Log { height: 1fr; scrollbar-size: 1 1; background: $surface; }
    """

    BINDINGS = [Binding("escape,q,n", "close", "close")]

    def __init__(self, node: str, path: Path) -> None:
        super().__init__()
        self.node = node
        self.path = path
        self.lines, self.problem = read_lines(path)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"{self.path.name} · {len(self.lines)} lines"
            dialog.border_subtitle = "↑↓ PgUp PgDn Home End scroll · Esc close"
            yield Log(highlight=False, id="node-log")

    def on_mount(self) -> None:
        log = self.query_one(Log)
        log.write_lines(self.lines or [self.problem], scroll_end=True)
        log.focus()
