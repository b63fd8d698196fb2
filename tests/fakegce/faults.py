"""Injected trouble: queued per-path faults, random 429/503 by rate, lost replies (queued or by rate).

The random draws come from one seeded generator, so a test that sends the same requests in
the same order sees the same faults.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass

from .errors import ApiError, OpError, for_status, internal_error


@dataclass(frozen=True)
class LostReply:
    """The call is carried out, then its reply is replaced by a 503."""


@dataclass
class _Queued:
    method: str
    pattern: re.Pattern[str]
    left: int
    fault: int | OpError | LostReply  # an HTTP status to answer with, an error the operation ends with, or a lost reply


class Faults:
    def __init__(self, *, rate: float, lose_rate: float, seed: int, op_fail_rate: float = 0.0) -> None:
        self._rate = rate
        self._lose_rate = lose_rate
        self._op_fail_rate = op_fail_rate
        self._random = random.Random(seed)
        self._queued: list[_Queued] = []
        self._lock = threading.Lock()

    def queue(self, method: str, path_regex: str, fault: int | OpError | LostReply, times: int) -> None:
        with self._lock:
            self._queued.append(_Queued(method.upper(), re.compile(path_regex), times, fault))

    def before(self, method: str, path: str) -> ApiError | None:
        """The error to answer before doing anything: a queued status first, else by rate."""
        with self._lock:
            status = self._take(method, path, int)
            if status is None and self._rate and self._random.random() < self._rate:
                status = self._random.choice((429, 503))
        return for_status(status, path) if status is not None else None  # type: ignore[arg-type]

    def op_error(self, method: str, path: str) -> OpError | None:
        """The error the operation of this mutating call must end with: queued first, else by
        op_fail_rate GCE's transient internal error."""
        with self._lock:
            queued = self._take(method, path, OpError)
            if queued is None and self._op_fail_rate and self._random.random() < self._op_fail_rate:
                return internal_error()
            return queued  # type: ignore[return-value]

    def lose_reply(self, method: str, path: str) -> bool:
        """Whether to drop the reply of a mutating call that was carried out: queued first, else by rate."""
        with self._lock:
            if self._take(method, path, LostReply) is not None:
                return True
            return bool(self._lose_rate) and self._random.random() < self._lose_rate

    def _take(self, method: str, path: str, kind: type) -> int | OpError | LostReply | None:
        for entry in self._queued:
            if entry.left and entry.method == method and isinstance(entry.fault, kind) and entry.pattern.search(path):
                entry.left -= 1
                return entry.fault
        return None
