from __future__ import annotations

import time

import pytest


@pytest.fixture(autouse=True)
def utc_and_default_theme(monkeypatch: pytest.MonkeyPatch):
    """Log timestamps in UTC and Textual's default theme, whatever the machine says."""
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("TEXTUAL_THEME", raising=False)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
