"""The engine's event stream: frozen dataclasses, written as JSON lines by `--json`.

Both front ends consume only these events, so the TUI tests can replay a recorded `--json`
stream and see exactly what a live run showed.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

EVENT_SCHEMA = 1


class Status(enum.StrEnum):
    """Stage and check results. "unverified" is never shown as passed. A StrEnum: state.toml and the
    `--json` stream carry the plain words."""

    PENDING = "pending"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNVERIFIED = "unverified"


# the members by the names khwtui has always imported
PENDING, RUNNING, PASSED, FAILED, SKIPPED, UNVERIFIED = Status.PENDING, Status.RUNNING, Status.PASSED, Status.FAILED, Status.SKIPPED, Status.UNVERIFIED
STAGE_STATUSES = (PENDING, RUNNING, PASSED, FAILED, SKIPPED, UNVERIFIED)
CHECK_RESULTS = (PASSED, FAILED, UNVERIFIED)


@dataclass(frozen=True)
class StageChanged:
    kind: ClassVar[str] = "stage"
    stage: str
    status: Status
    detail: str = ""  # a one-line summary, the last error line, or the unverified reason
    at: float = 0.0


@dataclass(frozen=True)
class NodeChanged:
    kind: ClassVar[str] = "node"
    node: str
    status: Status  # pending | running | passed | failed
    stage: str = ""
    detail: str = ""
    address: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class LogLines:
    kind: ClassVar[str] = "log"
    node: str  # "" for the operator's machine
    stage: str
    lines: tuple[str, ...]
    stream: str = "out"  # out | err | cmd
    at: float = 0.0


@dataclass(frozen=True)
class CheckResult:
    kind: ClassVar[str] = "check"
    stage: str
    check: str
    result: Status  # passed | failed | unverified
    node: str = ""
    evidence: str = ""  # failed: command and output; unverified: the reason
    at: float = 0.0


@dataclass(frozen=True)
class HealthChanged:
    kind: ClassVar[str] = "health"
    probe: str
    result: Status  # passed | failed | unverified
    node: str = ""
    latency_ms: float | None = None
    detail: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class TransferProgress:
    """A release file on its way to a node: downloaded there ("node") or uploaded to it ("push").
    `done` only grows for one (node, file, mode); `total` is 0 while unknown."""

    kind: ClassVar[str] = "transfer"
    node: str
    stage: str
    file: str
    mode: str  # node | push
    done: int
    total: int = 0
    rate: float = 0.0  # bytes per second since the transfer started
    at: float = 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None while the total or the rate is unknown."""
        if not self.total or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate


@dataclass(frozen=True)
class RunFinished:
    kind: ClassVar[str] = "finished"
    exit_code: int
    summary: str = ""
    at: float = 0.0


Event = StageChanged | NodeChanged | LogLines | CheckResult | HealthChanged | TransferProgress | RunFinished
Sink = Callable[[Event], None]
EVENT_TYPES: dict[str, type] = {cls.kind: cls for cls in (StageChanged, NodeChanged, LogLines, CheckResult, HealthChanged, TransferProgress,
                                                          RunFinished)}


def to_json(event: Event) -> str:
    """One JSON object per event, carrying the schema version and the event kind."""
    body: dict[str, Any] = {"v": EVENT_SCHEMA, "kind": event.kind, **dataclasses.asdict(event)}
    if isinstance(event, LogLines):
        body["lines"] = list(event.lines)
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def from_json(line: str) -> Event:
    """Parse one line of a `--json` stream; a newer schema or unknown kind is a ValueError."""
    body = json.loads(line)
    if body.get("v") != EVENT_SCHEMA:
        raise ValueError(f"event schema {body.get('v')!r}, this khwtui reads {EVENT_SCHEMA}")
    cls = EVENT_TYPES.get(body.pop("kind", None))
    if cls is None:
        raise ValueError(f"unknown event kind in {line[:80]!r}")
    body.pop("v")
    if cls is LogLines:
        body["lines"] = tuple(body["lines"])
    return cls(**{name: Status(value) if name in _status_fields(cls) else value for name, value in body.items()})


@functools.cache
def _status_fields(cls: type) -> frozenset[str]:
    """The fields holding a Status: JSON carries them as plain words, a replayed event has the members."""
    return frozenset(name for name, hint in typing.get_type_hints(cls).items() if hint is Status)
