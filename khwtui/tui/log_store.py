"""The log pane's memory: a bounded tail per (node, stage), so any filter can be re-applied.

The full output lives on disk (the engine writes logs/<node>.log); this keeps only what the
pane can show. Every entry carries a sequence number, so merging the tails of several keys
gives them back in the order they arrived.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass
from itertools import islice

from khwtui.core.events import CheckResult, LogLines
from khwtui.tui.marks import STAGE_MARKS

PER_KEY = 5000
LOCAL = "local"  # how lines from the operator's machine (node "") are labelled
STREAM_MARKS = {"out": "│", "cmd": "$", "err": "!"}
STAGE_WIDTH = 13  # "control-plane"


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: float
    node: str
    stage: str
    mark: str  # │ output, $ command, ! stderr, ✔ ✖ ? check results
    text: str


@dataclass(frozen=True)
class LogFilter:
    """Which lines the pane shows: some nodes (None: all) and one stage (None: all)."""

    nodes: frozenset[str] | None = None
    node_label: str = ""
    stage: str | None = None

    def accepts(self, node: str, stage: str) -> bool:
        return (self.nodes is None or node in self.nodes) and (self.stage is None or stage == self.stage)

    def matches(self, entry: Entry) -> bool:
        return self.accepts(entry.node, entry.stage)

    @property
    def title(self) -> str:
        parts = [self.node_label if self.nodes is not None else "", self.stage or ""]
        return " · ".join(p for p in parts if p) or "all nodes · all stages"


class LogStore:
    def __init__(self, per_key: int = PER_KEY) -> None:
        self._per_key = per_key
        self._tails: dict[tuple[str, str], deque[Entry]] = {}
        self._seq = 0

    def add(self, event: LogLines | CheckResult) -> list[Entry]:
        """Keep the event's lines; returns the entries made from it."""
        if isinstance(event, CheckResult):  # the verdict, then its evidence indented below it
            texts = (f"check {event.check}", *(f"  {line}" for line in event.evidence.splitlines() if line.strip()))
            mark = STAGE_MARKS[event.result]
        else:
            texts = tuple(line for text in event.lines for line in (text.splitlines() or [""]))
            mark = STREAM_MARKS.get(event.stream, STREAM_MARKS["out"])
        tail = self._tails.setdefault((event.node, event.stage), deque(maxlen=self._per_key))
        entries = [Entry(self._seq + i, event.at, event.node, event.stage, mark, text) for i, text in enumerate(texts)]
        self._seq += len(entries)
        tail.extend(entries)
        return entries

    def select(self, flt: LogFilter, limit: int) -> list[Entry]:
        """The newest `limit` entries the filter matches, oldest first."""
        tails = [t for (node, stage), t in self._tails.items() if flt.accepts(node, stage)]
        newest = heapq.merge(*(reversed(t) for t in tails), key=lambda e: -e.seq)
        return list(reversed(list(islice(newest, limit))))


@dataclass(frozen=True)
class LineFormat:
    """How entries become lines for one filter: columns that the filter fixes are left out."""

    node_width: int
    show_node: bool
    show_stage: bool
    show_time: bool

    @classmethod
    def for_filter(cls, flt: LogFilter, node_names: list[str], *, compact: bool = False) -> LineFormat:
        """Compact (narrow terminals) drops the timestamp; the full log on disk keeps it."""
        width = max([len(LOCAL), *(len(n) for n in node_names)])
        single_node = flt.nodes is not None and len(flt.nodes) == 1
        return cls(width, not single_node, flt.stage is None, not compact)

    @property
    def mark_column(self) -> int:
        """Where the mark sits in every line (the highlighter colours it)."""
        return (9 if self.show_time else 0) + (self.node_width + 1 if self.show_node else 0) + (STAGE_WIDTH + 1 if self.show_stage else 0)

    def line(self, entry: Entry) -> str:
        stamp = ""
        if self.show_time:
            stamp = (time.strftime("%H:%M:%S", time.localtime(entry.at)) if entry.at else " " * 8) + " "
        node = f"{entry.node or LOCAL:<{self.node_width}} " if self.show_node else ""
        stage = f"{entry.stage:<{STAGE_WIDTH}} " if self.show_stage else ""
        return f"{stamp}{node}{stage}{entry.mark} {entry.text}"
