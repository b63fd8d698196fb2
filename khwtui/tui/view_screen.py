"""A read-only view over the main screen: a bordered panel filling all but a margin, with a
title and its keys in the border, closed with Escape (or the key that opened it)."""

from __future__ import annotations

from textual.screen import ModalScreen


class ViewScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    ViewScreen {
        align: center middle;
        background: $background 60%;
        #dialog {
            width: 100%;
            height: 100%;
            margin: 1 2;
            border: round $primary;
            border-title-color: $foreground;
            border-subtitle-color: $text-muted;
            background: $surface;
        }
    }
    """

    def action_close(self) -> None:
        self.dismiss(None)
