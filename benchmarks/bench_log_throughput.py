"""Log throughput of the TUI: 100,000 lines through the bridge while a key is pressed every 50 ms.

Prints how long until the log pane shows the last line, and the worst delay between a
keypress (moving the stage cursor) and the frame that shows it. Not a test: a number to
watch. Run: `python benchmarks/bench_log_throughput.py [--lines N] [--chunk N] [--size 120x40]`.

Frames are timed at `App._display`, the one place every screen update passes through (in
headless mode it returns before writing to a terminal), so "refresh" means the compositor
produced the frame a terminal would get.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field

from textual import events

from khwtui.core.events import LogLines, Sink
from khwtui.model import config as config_module
from khwtui.model.topology import Topology
from khwtui.tui.app import make_app
from khwtui.tui.contracts import StageInfo

NODES = ("controller-0", "controller-1", "worker-0", "worker-1")
KEY_EVERY = 0.05


@dataclass
class FloodEngine:
    """Emits `lines` log lines in events of `chunk` lines, yielding to the loop between events
    the way a stream of SSH reads does."""

    lines: int
    chunk: int
    stages: list[StageInfo] = field(
        default_factory=lambda: [StageInfo("workers", "workers", "apt, containerd, kubelet"), StageInfo("routes", "routes", "pod routes")]
    )

    async def run(self, sink: Sink, **selection: object) -> int:
        for start in range(0, self.lines, self.chunk):
            count = min(self.chunk, self.lines - start)
            text = tuple(f"Unpacking libfoo{n} (1.2.{n % 97}-1) over (1.2.{n % 97}) ..." for n in range(start, start + count))
            sink(LogLines(NODES[start // self.chunk % len(NODES)], "workers", text, "out", time.time()))
            await asyncio.sleep(0)
        return 0

    def cancel(self) -> None:
        """The flood always runs to the end."""


@dataclass
class Timings:
    started: float = 0.0
    all_shown: float | None = None
    frames: int = 0
    batches: int = 0  # LogBatch messages, i.e. Log.write_lines calls at most
    key_delays: list[float] = field(default_factory=list)
    pending_key: tuple[float, int] | None = None  # (pressed at, the cursor row it leads to)


async def measure(lines: int, chunk: int, size: tuple[int, int]) -> Timings:
    config = config_module.load()
    engine = FloodEngine(lines, chunk)
    app = make_app(config, Topology(config), engine)
    timings = Timings()
    last_line = f"Unpacking libfoo{lines - 1} (1.2.{(lines - 1) % 97}-1) over (1.2.{(lines - 1) % 97}) ..."

    async with app.run_test(size=size) as pilot:
        table, pane = app.stage_list, app.log_pane
        display = app._display

        def timed_display(screen, renderable) -> None:
            display(screen, renderable)
            if renderable is None:
                return
            now = time.perf_counter()
            timings.frames += 1
            if timings.pending_key and table.cursor_row == timings.pending_key[1]:
                timings.key_delays.append(now - timings.pending_key[0])
                timings.pending_key = None
            if timings.all_shown is None and pane.lines and pane.lines[-1].endswith(last_line):
                timings.all_shown = now - timings.started

        app._display = timed_display
        table.focus()
        await pilot.pause()
        timings.started = time.perf_counter()
        app.start_run()
        key, row = "down", 0
        while timings.all_shown is None:
            if timings.pending_key is None:  # one keypress in flight at a time, every 50 ms
                row = 1 - row
                key = "down" if row == 1 else "up"
                timings.pending_key = (time.perf_counter(), row)
                app.post_message(events.Key(key, None))
            await asyncio.sleep(KEY_EVERY)
        await app.workers.wait_for_complete()
        timings.batches = app.bridge.batches
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10, help="lines per LogLines event")
    parser.add_argument("--size", default="120x40")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    t = asyncio.run(measure(args.lines, args.chunk, (width, height)))
    delays = t.key_delays or [float("nan")]
    print(f"{args.lines} lines in events of {args.chunk}, terminal {args.size}")
    print(f"time until the last line is shown: {t.all_shown:.2f} s ({t.frames} frames, {t.batches} log batches)")
    print(
        f"keypress -> refresh over {len(t.key_delays)} presses: worst {max(delays) * 1000:.0f} ms, "
        f"median {statistics.median(delays) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
