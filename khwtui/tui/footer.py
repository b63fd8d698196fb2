"""The footer: every key, or on narrow terminals the ones that do not fit left out (the
command palette, always shown, still lists them all, and the banner names the ones a failed
build needs)."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widgets import Footer


class KeyFooter(Footer):
    narrow: reactive[bool] = reactive(False, recompose=True)

    def __init__(self, wide_only: Iterable[str]) -> None:
        super().__init__(compact=True)
        self._wide_only = frozenset(wide_only)  # actions whose keys only show on wide terminals

    def compose(self) -> ComposeResult:
        for key in super().compose():
            if not (self.narrow and getattr(key, "action", None) in self._wide_only):
                yield key
