"""Poll a condition until it holds or a deadline passes: the only way khwtui waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def poll(check: Callable[[], Awaitable[T | None]], *, timeout: float, interval: float = 0.5, what: str) -> T:
    """Await `check` until it returns something other than None; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
