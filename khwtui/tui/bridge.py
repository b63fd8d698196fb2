"""Engine events → Textual messages, with log lines batched.

The engine calls `Bridge.sink` for every event, from the app's loop or from any thread.
Status events are posted at once; log lines wait in a buffer that the app flushes about ten
times a second, so 100,000 lines cost a few hundred `Log.write_lines` calls, not 100,000.
A status event first flushes the lines before it, so the screen never shows a stage as
finished before its last output.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from textual.message import Message
from textual.message_pump import MessagePump

from khwtui.core.events import Event, LogLines

FLUSH_INTERVAL = 0.1  # seconds between log flushes


@dataclass
class EngineEvent(Message):
    """One status event (stage, node, check, health, run finished)."""

    event: Event


@dataclass
class LogBatch(Message):
    """Every log event that arrived since the previous flush, in order."""

    events: tuple[LogLines, ...]


class Bridge:
    def __init__(self, target: MessagePump) -> None:
        self._target = target
        self._pending: list[LogLines] = []
        self._lock = threading.Lock()
        self.batches = 0  # LogBatch messages posted so far

    def sink(self, event: Event) -> None:
        """The engine's sink: thread-safe, never blocks on the UI."""
        if isinstance(event, LogLines):
            with self._lock:
                self._pending.append(event)
            return
        self.flush()
        self._target.post_message(EngineEvent(event))

    def flush(self) -> None:
        """Post the buffered log lines as one batch (nothing when the buffer is empty)."""
        with self._lock:  # posting under the lock keeps batches in order across threads
            if self._pending:
                self.batches += 1
                self._target.post_message(LogBatch(tuple(self._pending)))
                self._pending = []
