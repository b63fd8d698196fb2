"""A watch on the event loop: every step of khwtui's own tasks that held it too long.

Only task steps with khwtui code in their coroutine chain count (the engine, its stages and their
children): Textual's own rendering is not ours to move off the loop. asyncio's own debug mode (`slow_callback_duration`) times callbacks by the wall clock, which on a
loaded 2-core CI machine flags a 5 ms callback that merely lost the CPU. Here a callback counts as
blocking when it used more than `cpu` seconds of this thread's CPU time (key generation, hashing,
parsing on the loop) or more than `wall` seconds of wall time (a blocking wait: subprocess.run,
a synchronous download or cloud call). Both freeze the screen.
"""

from __future__ import annotations

import asyncio.events
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    cpu: float
    wall: float
    callback: str


def khwtui_chain(handle: asyncio.events.Handle) -> list[str] | None:
    """The coroutine chain of a task step, from the task down to where it awaits now (the slow code
    ran just before that), when khwtui's code is in it; None for anything else."""
    task = getattr(handle._callback, "__self__", None)  # Task.task_wakeup / __step are bound to the task
    if not isinstance(task, asyncio.Task):
        return None
    frames, ours, coro = [], False, task.get_coro()
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        code = coro.cr_frame.f_code
        ours = ours or (f"{os.sep}khwtui{os.sep}" in code.co_filename and f"{os.sep}tui{os.sep}" not in code.co_filename)
        frames.append(f"{code.co_qualname}:{coro.cr_frame.f_lineno}")
        coro = coro.cr_await
    return frames if ours else None


@contextmanager
def blocking_callbacks(cpu: float = 0.1, wall: float = 1.0) -> Iterator[list[Held]]:
    """Collects the steps of khwtui's tasks (each runs as a Handle) over either limit."""
    held: list[Held] = []
    original = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        cpu_start, wall_start = time.thread_time(), time.monotonic()
        try:
            original(handle)
        finally:
            used, took = time.thread_time() - cpu_start, time.monotonic() - wall_start
            if used > cpu or took > wall:
                chain = khwtui_chain(handle)
                if chain is not None:
                    held.append(Held(round(used, 3), round(took, 3), " > ".join(chain)))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    try:
        yield held
    finally:
        asyncio.events.Handle._run = original  # type: ignore[method-assign]
