"""The renewal confirmation: which certificates to re-issue and roll out, typed by name.

It opens from the certificates view (`r`) with the certificates that need attention filled in.
The renew button stays disabled until every name is one of the table's leaves (the CA is never
renewed here); Escape, or "keep", renews nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

CA = "ca"


class ConfirmRenew(ModalScreen[list[str] | None]):
    DEFAULT_CSS = """
    ConfirmRenew {
        align: center middle;
        background: $background 60%;
        #dialog { width: 96; max-width: 96%; height: auto; border: thick $warning; background: $panel; padding: 0 1; }
        #names { margin-top: 1; }
        #problem { color: $text-muted; height: auto; }
        #buttons { height: auto; align-horizontal: right; margin-top: 1; }
        Button { margin-left: 2; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "keep", "renew nothing")]
    AUTO_FOCUS = "#names"

    def __init__(self, leaves: Sequence[str], suggested: Sequence[str]) -> None:
        super().__init__()
        self.leaves = [name for name in leaves if name != CA]
        self.suggested = [name for name in suggested if name in self.leaves]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = "Renew certificates"
            yield Static("Re-issue these certificates and roll them out one node at a time? Only the units that "
                         "read them restart, and each node must serve the new one before the next.", markup=False)
            yield Input(", ".join(self.suggested), placeholder="names, comma separated (e.g. kubernetes, admin)", id="names")
            yield Static(self.problem(self.suggested), id="problem", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Keep them (Esc)", id="keep")
                yield Button("Renew", id="renew", variant="warning", disabled=bool(self.problem(self.suggested)))

    @property
    def names(self) -> list[str]:
        return [n.strip() for n in self.query_one("#names", Input).value.split(",") if n.strip()]

    def problem(self, names: list[str]) -> str:
        """Why `names` cannot be renewed ("" when they can)."""
        if not names:
            return "type one or more certificate names"
        unknown = [n for n in names if n not in self.leaves]
        if CA in unknown:
            return "the CA is not renewed here; the README says how to rotate it by hand"
        return f"not a certificate of this cluster: {', '.join(unknown)}" if unknown else ""

    def on_input_changed(self, event: Input.Changed) -> None:
        problem = self.problem(self.names)
        self.query_one("#problem", Static).update(problem)
        self.query_one("#renew", Button).disabled = bool(problem)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not self.problem(self.names):
            self.dismiss(self.names)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.names if event.button.id == "renew" and not self.problem(self.names) else None)

    def action_keep(self) -> None:
        self.dismiss(None)
