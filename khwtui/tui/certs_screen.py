"""The certificates view: the `khwtui certs` table (the same rows, the same cells) in a modal.

A certificate that needs attention (renew soon, expired, missing, not matching its spec) is
marked and coloured; the status word says it too, so colour is never the only signal. Each
certificate takes one line with its SANs wrapped below it (and its CN and O too, where they do
not fit beside the name: 80 columns). Only
public facts are shown: names, subjects, SANs and dates, never key material.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, cast

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from khwtui.core.events import FAILED, PASSED, UNVERIFIED, Status
from khwtui.tui.marks import mark, status_style
from khwtui.tui.view_screen import ViewScreen

if TYPE_CHECKING:  # app.py imports this module
    from khwtui.artifacts.pki import CertRow
    from khwtui.tui.app import KhwApp

HEADERS = ("name", "CN", "O", "SANs", "not after", "days left", "status")  # `khwtui certs`' columns
COLUMNS = ("name", "CN", "O", "not after", "days left", "status")  # one line each; the SANs go below
STACKED = ("name", "not after", "days left", "status")  # narrow: CN and O go below too
SEVERITY = {"ok": PASSED, "renew soon": UNVERIFIED}  # anything else (expired, missing, mismatch) is a failure
MARKS = {PASSED: "✔", UNVERIFIED: "!", FAILED: "✖"}
INDENT = (0, 0, 0, 2)  # the lines below a certificate start under its name


def cells(row: CertRow) -> tuple[str, ...]:
    """One row as `khwtui certs` prints it ("-" for what is missing), in HEADERS' order."""
    not_after = row.not_after.strftime("%Y-%m-%d") if row.not_after else "-"
    days = "-" if row.days_left is None else str(row.days_left)
    return (row.name, row.cn, row.org or "-", row.sans or "-", not_after, days, row.status)


def severity(row: CertRow) -> Status:
    return SEVERITY.get(row.status, FAILED)


def natural_widths(columns: tuple[str, ...], lines: list[tuple[str, ...]]) -> list[int]:
    return [max([len(header), *(len(line[i]) for line in lines)]) for i, header in enumerate(columns)]


class CertTable(Static):
    """The table, laid out for its own width: one line per certificate with its SANs below it;
    where CN and O do not fit on that line (80 columns), they go on a line of their own."""

    def __init__(self, rows: list[CertRow]) -> None:
        super().__init__(id="certs-table")
        self.rows = rows
        self.plain = ""  # the table as plain text (tests read it)

    def on_resize(self) -> None:
        table = self.table(self.size.width)
        console = self.app.console
        lines = console.render_lines(table, console.options.update_width(self.size.width), pad=False)
        self.plain = "\n".join("".join(segment.text for segment in line).rstrip() for line in lines)
        self.update(table)

    def table(self, width: int) -> Group:
        values = [dict(zip(HEADERS, cells(row), strict=True)) for row in self.rows]
        wide = natural_widths(COLUMNS, [tuple(v[c] for c in COLUMNS) for v in values])
        columns = COLUMNS if sum(wide) + len(wide) + 2 <= width else STACKED
        widths = natural_widths(columns, [tuple(v[c] for c in columns) for v in values])
        parts: list[RenderableType] = [_line("", columns, widths, Style(bold=True))]
        for row, value in zip(self.rows, values, strict=True):
            style = status_style(severity(row), self.app.theme_variables) if row.status != "ok" else Style()
            below = Style(dim=row.status == "ok") + style
            parts.append(_line(mark(severity(row), self.app.theme_variables, MARKS), [value[c] for c in columns], widths, style))
            if columns is STACKED:
                parts.append(Padding(Text(f"CN: {value['CN']} · O: {value['O']}", style=below), INDENT))
            if row.sans:
                parts.append(Padding(Text(f"SANs: {row.sans}", style=below), INDENT))
        return Group(*parts)


def _line(status_mark: Text | str, values: Sequence[str], widths: list[int], style: Style) -> Table:
    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(width=1)
    for width in widths:
        grid.add_column(width=width, no_wrap=True, overflow="ellipsis")
    grid.add_row(status_mark, *values, style=style)
    return grid


class CertsScreen(ViewScreen):
    DEFAULT_CSS = """
    CertsScreen {
        #certs { height: 1fr; scrollbar-size-vertical: 1; padding: 0 1; }
        #certs-table { width: 1fr; }
        #certs-summary { height: auto; padding: 0 1; background: $boost; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,c", "close", "close"), Binding("r", "renew", "renew")]

    def __init__(self, rows: Sequence[CertRow]) -> None:
        super().__init__()
        self.rows = list(rows)

    @property
    def attention(self) -> list[CertRow]:
        return [r for r in self.rows if r.status != "ok"]

    @property
    def summary(self) -> str:
        if not self.rows or all(r.status == "missing" for r in self.rows):
            return "no certificates yet: the pki stage makes them"
        if not self.attention:
            soonest = min(self.rows, key=lambda r: r.days_left if r.days_left is not None else 0)
            return f"all {len(self.rows)} certificates ok; the first expires in {soonest.days_left} days ({soonest.name})"
        names = ", ".join(f"{r.name} ({r.status})" for r in self.attention)
        return f"{len(self.attention)} of {len(self.rows)} need attention: {names}"

    @property
    def _khw(self) -> KhwApp:
        return cast("KhwApp", self.app)  # only KhwApp shows this screen

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = f"Certificates · {len(self.rows)}"
            dialog.border_subtitle = "↑↓ PgUp PgDn scroll · r renew · Esc close" if self._khw.services.renew else "↑↓ PgUp PgDn scroll · Esc close"
            yield Static(Text(self.summary), id="certs-summary")
            with VerticalScroll(id="certs"):
                yield CertTable(self.rows)

    def on_mount(self) -> None:
        self.query_one("#certs", VerticalScroll).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self._khw.services.renew is not None if action == "renew" else True

    def action_renew(self) -> None:
        """Ask which to renew (those needing attention filled in); the app rolls them out."""
        self._khw.renew_certificates([r.name for r in self.rows], [r.name for r in self.attention])
