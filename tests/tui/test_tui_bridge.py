"""The bridge: engine events become messages; log lines travel in batches, in order, from any thread."""

from __future__ import annotations

import threading

from khwtui.core.events import LogLines, StageChanged
from khwtui.tui.app import make_app
from khwtui.tui.bridge import EngineEvent, LogBatch

from .fake_engine import FakeEngine
from .support import T0, FrozenClock, gcp_config, gcp_topology, wait_until


def idle_app():
    config = gcp_config()
    return make_app(config, gcp_topology(config), FakeEngine([]), clock=FrozenClock())


def line(i: int) -> LogLines:
    return LogLines("worker-0", "workers", (f"line {i}",), "out", T0)


async def test_a_burst_of_lines_reaches_the_log_in_one_write() -> None:
    app = idle_app()
    async with app.run_test() as pilot:
        log = app.log_pane.log_widget
        writes: list[int] = []
        write_lines = log.write_lines
        log.write_lines = lambda lines, *args, **kwargs: writes.append(len(lines)) or write_lines(lines, *args, **kwargs)
        for i in range(1000):
            app.bridge.sink(line(i))  # no await in between: the flush timer cannot run yet
        await wait_until(pilot, lambda: len(app.log_pane.lines) == 1000, "1000 lines in the pane")
        assert app.bridge.batches == 1
        assert writes == [1000]


async def test_a_status_event_first_flushes_the_lines_before_it() -> None:
    seen = []
    app = idle_app()
    async with app.run_test(message_hook=seen.append) as pilot:
        app.bridge.sink(line(1))
        app.bridge.sink(StageChanged("workers", "failed", "", T0))
        await wait_until(pilot, lambda: app.progress.stages["workers"].status == "failed", "the stage to fail")
        order = [type(m) for m in seen if isinstance(m, (LogBatch, EngineEvent))]
        assert order == [LogBatch, EngineEvent]
        assert app.bridge.batches == 1


async def test_lines_from_another_thread_arrive_complete_and_in_order() -> None:
    app = idle_app()
    async with app.run_test() as pilot:
        worker = threading.Thread(target=lambda: [app.bridge.sink(line(i)) for i in range(2000)])
        worker.start()
        worker.join()
        await wait_until(pilot, lambda: len(app.log_pane.lines) == 2000, "2000 lines in the pane")
        assert [int(text.rsplit(" ", 1)[1]) for text in app.log_pane.lines] == list(range(2000))
