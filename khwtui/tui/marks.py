"""Status marks: one glyph per status, so colour is never the only signal, plus theme colours."""

from __future__ import annotations

from collections.abc import Mapping

from rich.style import Style
from rich.text import Text

from khwtui.core.events import FAILED, PASSED, PENDING, RUNNING, SKIPPED, UNVERIFIED, Status

STAGE_MARKS = {PASSED: "✔", RUNNING: "⟳", FAILED: "✖", PENDING: "·", SKIPPED: "⊘", UNVERIFIED: "?"}
NODE_MARKS = {**STAGE_MARKS, PENDING: "○", PASSED: "●"}
THEME_COLOURS = {PASSED: "success", RUNNING: "primary", FAILED: "error", UNVERIFIED: "warning"}


def status_style(status: Status, variables: Mapping[str, str]) -> Style:
    """The theme's colour for a status (`App.theme_variables`); pending and skipped are dim."""
    colour = variables.get(THEME_COLOURS.get(status, ""), "")
    if not colour:
        return Style(dim=True)
    return Style(color=colour, bold=status in (RUNNING, FAILED))


def mark(status: Status, variables: Mapping[str, str], glyphs: Mapping[Status, str] = STAGE_MARKS) -> Text:
    return Text.assemble((glyphs.get(status, "•"), status_style(status, variables)))


def duration(seconds: float | None) -> str:
    """0:48, 12:04 or 1:02:03; blank when unknown."""
    if seconds is None:
        return ""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
