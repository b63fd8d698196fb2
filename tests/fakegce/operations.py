"""Operations: PENDING -> RUNNING -> DONE by elapsed time (and slow work), requestId replay.

An operation is DONE once `latency` seconds have passed since it started and its work (if
any) has finished; only then is its effect applied (`finish`), or its error reported.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from .errors import OpError, not_found
from .paths import Scope, url
from .specs import timestamp

Finish = Callable[[object], OpError | None]  # gets the work's result (or its OpError)


@dataclass(frozen=True)
class OpSpan:
    """When one operation ran: kind ("instances.insert"), target name, start and DONE (time.monotonic())."""

    kind: str
    target: str
    started: float
    ended: float


@dataclass
class Operation:
    name: str
    id: str
    project: str
    scope: Scope
    kind: str  # "<collection>.<operationType>", e.g. "instances.insert"
    target: str
    target_id: str
    started: float
    due: float
    inserted: str
    error: OpError | None = None
    work: Future | None = None
    finish: Finish | None = None
    done: bool = False
    work_ended: float = math.inf
    end_time: str = ""

    @property
    def ends(self) -> float:
        """When the operation can be DONE (infinity while its work runs)."""
        return max(self.due, self.work_ended if self.work else self.due)

    def complete(self) -> None:
        """Apply the effect (or record why it failed) and mark DONE."""
        if self.error is None and self.finish:
            self.error = self.finish(self._outcome())
        self.done = True
        self.end_time = timestamp()

    def status(self, now: float) -> str:
        if self.done:
            return "DONE"
        return "PENDING" if now < self.started + (self.due - self.started) * 0.2 else "RUNNING"

    def to_json(self, now: float) -> dict:
        body = {
            "kind": "compute#operation",
            "id": self.id,
            "name": self.name,
            "operationType": self.kind.split(".")[1],
            "targetLink": url(self.target),
            "targetId": self.target_id,
            "status": self.status(now),
            "progress": 100 if self.done else 0,
            "insertTime": self.inserted,
            "startTime": self.inserted,
            "selfLink": url(f"projects/{self.project}/{self.scope.path}/operations/{self.name}"),
        }
        if self.scope.kind != "global":
            body[self.scope.kind.removesuffix("s")] = url(f"projects/{self.project}/{self.scope.path}")
        if self.done:
            body["endTime"] = self.end_time
            body |= self.error.fields() if self.error else {}
        return body

    def _outcome(self) -> object:
        if self.work is None:
            return None
        failure = self.work.exception()
        if failure:
            return OpError("INTERNAL_ERROR", f"The machine behind the resource failed: {failure}", 500)
        return self.work.result()


class Operations:
    """Every operation of the fake, by scope and name, and by the requestId that made it."""

    def __init__(self, project: str, latency: float, notify: Callable[[], None]) -> None:
        self._project = project
        self._latency = latency
        self._notify = notify
        self._ops: dict[tuple[Scope, str], Operation] = {}
        self._by_request: dict[str, Operation] = {}
        self._count = itertools.count(1)

    def start(
        self,
        scope: Scope,
        kind: str,
        target: str,
        target_id: str,
        request_id: str | None,
        *,
        error: OpError | None = None,
        work: Future | None = None,
        finish: Finish | None = None,
    ) -> Operation:
        n, now = next(self._count), time.monotonic()
        op = Operation(
            name=f"operation-{int(time.time() * 1000)}-{n:08x}",
            id=str(7 * 10**18 + n),
            project=self._project,
            scope=scope,
            kind=kind,
            target=target,
            target_id=target_id,
            started=now,
            due=now + self._latency,
            inserted=timestamp(),
            error=error,
            work=work,
            finish=finish,
        )
        self._ops[(scope, op.name)] = op
        if request_id:
            self._by_request[request_id] = op
        if work:
            work.add_done_callback(lambda _: self._work_done(op))
        return op

    def replay(self, request_id: str | None) -> Operation | None:
        """The operation an earlier request with this requestId started, if any."""
        return self._by_request.get(request_id) if request_id else None

    def get(self, scope: Scope, name: str) -> Operation:
        op = self._ops.get((scope, name))
        if op is None:
            raise not_found(f"projects/{self._project}/{scope.path}/operations/{name}")
        return op

    def completable(self, now: float) -> list[Operation]:
        """Operations that may become DONE now, in the order they became ready."""
        return sorted((op for op in self._ops.values() if not op.done and op.ends <= now), key=lambda op: op.ends)

    def max_in_flight(self, kind: str) -> int:
        """The highest number of operations of `kind` that were running at the same time."""
        events = []
        for op in self._ops.values():
            if op.kind == kind and op.ends > op.started:
                events += [(op.started, 1), (op.ends, -1)]
        running = peak = 0
        for _, delta in sorted(events):  # at equal times an end (-1) sorts before a start
            running += delta
            peak = max(peak, running)
        return peak

    def durations(self) -> list[tuple[str, float]]:
        """(kind, seconds from start to DONE) of every operation that is DONE, in start order."""
        return [(span.kind, span.ended - span.started) for span in self.spans()]

    def spans(self) -> list[OpSpan]:
        """The operations that are DONE, in start order."""
        done = sorted((op for op in self._ops.values() if op.done), key=lambda op: op.started)
        return [OpSpan(op.kind, op.target.rsplit("/", 1)[-1], op.started, op.ends) for op in done]

    def _work_done(self, op: Operation) -> None:
        op.work_ended = time.monotonic()
        self._notify()
