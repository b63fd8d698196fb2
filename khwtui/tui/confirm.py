"""Asks before quitting stops a running build (the next `up` resumes it) or teardown."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from khwtui.tui.progress import TEARDOWN


class ConfirmQuit(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmQuit {
        align: center middle;
        background: $background 60%;
        #dialog {
            width: 60;
            max-width: 90%;
            height: auto;
            border: thick $error;
            background: $panel;
            padding: 1 2;
        }
        #question { margin-bottom: 1; }
        #buttons { height: auto; align-horizontal: right; }
        Button { margin-left: 2; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "stop and quit"),
        Binding("n,escape", "answer(False)", "keep running"),
    ]

    def __init__(self, stage: str | None) -> None:
        super().__init__()
        self.stage = stage

    @property
    def question(self) -> str:
        if self.stage == TEARDOWN.name:
            return "The teardown is running. Stop it and quit?\nWhat is left is deleted by the next teardown (d, or khwtui down)."
        running = f"Stage {self.stage} is running." if self.stage else "A build is running."
        return f"{running} Stop it and quit?\nThe next run resumes where this one stopped."

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Keep running (n)", id="no")
                yield Button("Stop and quit (y)", id="yes", variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, stop: bool) -> None:
        self.dismiss(stop)
