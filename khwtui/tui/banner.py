"""The next-step line under the header, shown while nothing runs: what to press now.

A fresh cluster says how to start, a half-built (resumed) one how far it got and how to
resume, a failed one which stage failed and why, with the keys that retry it.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from khwtui.core.events import FAILED, PASSED, PENDING, UNVERIFIED, Status
from khwtui.tui.marks import STAGE_MARKS, status_style
from khwtui.tui.progress import Progress


def tilde(path: Path) -> str:
    """The path as the user would type it: ~/... under their home."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except ValueError:
        return str(path)


def next_step(progress: Progress, cluster: str, state_dir: Path | None) -> tuple[Status, str]:
    """(status, sentence) for an idle screen; status picks the mark and colour."""
    total, done = len(progress.stages), progress.done
    failed = progress.with_status(FAILED)
    if failed:
        first = failed[0]
        why = f": {first.reason}" if first.reason else ""
        return FAILED, f"{first.info.name} failed{why} — t retry · f run from the selected stage"
    if done == total:
        unverified = progress.with_status(UNVERIFIED)
        if unverified:
            names = ", ".join(s.info.name for s in unverified)
            return UNVERIFIED, f"all {total} stages done; not verifiable here: {names} — the rows say why"
        return PASSED, f"all {total} stages done — {cluster} is built"
    if done:
        return PENDING, f"{done} of {total} stages done — press r to resume"
    torn = progress.teardown
    if torn is not None and torn.status == PASSED and not done:
        return PASSED, f"{cluster} is torn down ({torn.detail}) — press r to build it again"
    logs = f" · full logs in {tilde(state_dir / 'logs')}" if state_dir else ""
    return PENDING, f"nothing built yet — press r to build {cluster} ({total} stages){logs}"


class Banner(Static):
    DEFAULT_CSS = """
    Banner {
        height: auto;
        max-height: 2;
        padding: 0 1;
        background: $boost;
        text-overflow: ellipsis;
    }
    """

    def __init__(self) -> None:
        super().__init__(id="banner")
        self.sentence = ""

    def show(self, progress: Progress, cluster: str, state_dir: Path | None) -> None:
        status, self.sentence = next_step(progress, cluster, state_dir)
        self.update(Text.assemble((STAGE_MARKS[status] + " ", status_style(status, self.app.theme_variables)), self.sentence))
        self.display = True
