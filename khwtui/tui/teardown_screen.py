"""The teardown confirmation: exactly what the provider will delete, counted, and a deliberate yes.

Deleting needs the cluster's name typed in (then Enter, or the red button, which stays
disabled until the name matches and never has the focus first). Escape, or the "keep" button,
leaves everything as it is.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from khwtui.providers.base import PlannedResource

FIXED_ROWS = 17  # all but the plan: borders, question, count, name box, buttons and margins
MIN_PLAN_ROWS, MAX_PLAN_ROWS = 4, 20


def counted(plan: list[PlannedResource]) -> str:
    """"12 resources: instance × 4 · firewall × 3 · ..." in the order the plan lists the kinds."""
    kinds = Counter(r.kind for r in plan)
    return f"{len(plan)} resources: " + " · ".join(f"{kind} × {n}" for kind, n in kinds.items())


class ConfirmTeardown(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmTeardown {
        align: center middle;
        background: $background 60%;
        #dialog {
            width: 112;
            max-width: 96%;
            height: auto;
            max-height: 96%;
            border: thick $error;
            border-title-color: $foreground;
            background: $panel;
            padding: 0 1;
        }
        #plan { height: auto; margin: 1 0; scrollbar-size-vertical: 1; }
        #count { text-style: bold; }
        #name { margin-top: 1; }
        #buttons { height: auto; align-horizontal: right; margin-top: 1; }
        Button { margin-left: 2; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "keep", "keep the cluster")]

    def __init__(self, cluster: str, plan: list[PlannedResource]) -> None:
        super().__init__()
        self.cluster = cluster
        self.plan = list(plan)

    @property
    def question(self) -> str:
        if not self.plan:
            return f"Nothing of cluster {self.cluster} is left to delete."
        return f"Delete cluster {self.cluster}? These {len(self.plan)} resources go, with everything on them:"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = "Teardown"
            yield Static(self.question, id="question", markup=False)
            if self.plan:
                with VerticalScroll(id="plan"):
                    yield Static(self._table(), id="plan-table")
                yield Static(counted(self.plan), id="count", markup=False)
                yield Input(placeholder=f"type {self.cluster} to confirm", id="name", select_on_focus=False)
            with Horizontal(id="buttons"):
                yield Button("Keep it (Esc)", id="keep")
                if self.plan:
                    yield Button(f"Delete {len(self.plan)} resources", id="delete", variant="error", disabled=True)

    def on_mount(self) -> None:
        # The first focus is the name box (or "keep"): Enter alone can never delete anything.
        self.query_one("#name" if self.plan else "#keep").focus()

    def on_resize(self, event: events.Resize) -> None:
        """The plan scrolls within what the terminal leaves: the name box and buttons stay in view."""
        if self.plan:
            rows = min(MAX_PLAN_ROWS, max(MIN_PLAN_ROWS, event.size.height - FIXED_ROWS))
            self.query_one("#plan").styles.max_height = rows

    def _table(self) -> Table:
        """Nothing is cut: a long name or detail (a cgroup path) folds onto the next line."""
        grid = Table(box=None, expand=True, padding=(0, 1), header_style="bold", show_edge=False)
        grid.add_column("kind", no_wrap=True)
        grid.add_column("name", ratio=3, overflow="fold")
        grid.add_column("detail", ratio=2, overflow="fold")
        for resource in self.plan:
            grid.add_row(resource.kind, Text(resource.name), Text(resource.detail, style="dim"))
        return grid

    @property
    def confirmed(self) -> bool:
        return bool(self.plan) and self.query_one("#name", Input).value.strip() == self.cluster

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#delete", Button).disabled = not self.confirmed

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.confirmed:
            self.dismiss(True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "delete" and self.confirmed)

    def action_keep(self) -> None:
        self.dismiss(False)
