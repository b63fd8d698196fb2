"""The khwtui app: one screen that shows the build live and starts, slices and stops runs.

`make_app` (the class itself) is the one factory: the CLI and every test build the app
through it, with the engine, the clock and the saved state injected. The engine runs in an app-owned async worker
(group "pipeline"); its events reach the widgets only through the bridge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

from textual import events, getters
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widgets import Footer
from textual.worker import Worker, WorkerCancelled, WorkerFailed, WorkerState

from khwtui.config import Config
from khwtui.errors import EXIT_FAILED, EXIT_INTERRUPTED, KhwError
from khwtui.events import FAILED, CheckResult, Event, LogLines
from khwtui.topology import Topology
from khwtui.tui.banner import Banner
from khwtui.tui.bridge import FLUSH_INTERVAL, Bridge, EngineEvent, LogBatch
from khwtui.tui.confirm import ConfirmQuit
from khwtui.tui.contracts import EngineLike
from khwtui.tui.header import BuildHeader
from khwtui.tui.log_pane import LogPane
from khwtui.tui.log_store import LogFilter
from khwtui.tui.node_tree import FRONTEND, NodeTree, Pick
from khwtui.tui.progress import Progress
from khwtui.tui.stage_list import StageList

TICK = 1.0  # seconds between clock updates (header, running stage)
STOP_TIMEOUT = 60.0  # how long quitting waits for the engine to stop cleanly
NARROW, SHORT = 110, 32  # below these terminal sizes the layout compacts
RUN_ACTIONS = ("run_all", "run_stage", "run_from", "retry_failed")


class KhwApp(App[int | None]):
    """The main screen over one engine. Build it with `make_app(config, topo, engine, *,
    initial=(), clock=time.time, state_dir=None)`: `initial` are events that rebuild the saved
    state (a resumed cluster), `clock` drives every elapsed time shown, `state_dir` is named
    for the full logs. `run()` returns the exit code of the last run (None when nothing ran).
    """

    TITLE = "khwtui"
    CSS = """
    #top { height: auto; }
    #nodes { width: 50; height: 100%; }
    #stages { width: 1fr; height: auto; }
    .-narrow #nodes { width: 28; }
    .-short #top { height: 12; }
    .-short #stages { height: 100%; }
    """
    BINDINGS = [
        Binding("r", "run_all", "run all"),
        Binding("s", "run_stage", "stage"),
        Binding("f", "run_from", "from here"),
        Binding("t", "retry_failed", "retry"),
        Binding("l", "focus_log", "log"),
        Binding("slash", "search", "search", key_display="/"),
        Binding("q", "quit", "quit"),
        Binding("escape", "clear_filters", "all logs", show=False),
    ]

    running: reactive[bool] = reactive(False, bindings=True)

    header = getters.query_one(BuildHeader)
    banner = getters.query_one(Banner)
    node_tree = getters.query_one(NodeTree)
    stage_list = getters.query_one(StageList)
    log_pane = getters.query_one(LogPane)

    def __init__(
        self,
        config: Config,
        topo: Topology,
        engine: EngineLike,
        *,
        initial: Iterable[Event] = (),
        clock: Callable[[], float] = time.time,
        state_dir: Path | None = None,
        autostart: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._autostart = autostart  # a slice from the command line, run as soon as the screen is up
        self.config, self.topo, self.engine = config, topo, engine
        self.state_dir = state_dir
        self.clock = clock
        self.progress = Progress(list(engine.stages), topo)
        self.bridge = Bridge(self)
        self.exit_code: int | None = None  # of the last run in this session
        self._initial = list(initial)
        for event in self._initial:
            self.progress.apply(event)
        self._pipeline: Worker[int] | None = None
        self._pick: Pick | None = None
        self._stage: str | None = None

    def compose(self) -> ComposeResult:
        yield BuildHeader(self.config, self.progress, self.clock, running=lambda: self.running)
        yield Banner()
        with Horizontal(id="top"):
            yield NodeTree(self.topo, self.progress)
            yield StageList(self.progress, self.clock())
        yield LogPane([n.name for n in self.topo.nodes])
        yield Footer()

    def on_mount(self) -> None:
        self.log_pane.add(e for e in self._initial if isinstance(e, (LogLines, CheckResult)))
        self.set_interval(FLUSH_INTERVAL, self.bridge.flush, name="log-flush")
        self.set_interval(TICK, self.tick, name="clock")
        self._fit(self.size.width, self.size.height)
        self._show_banner()
        self.theme_changed_signal.subscribe(self, self._recolour)
        if self._autostart is not None:
            self.start_run(**self._autostart)

    def _recolour(self, _theme: object) -> None:
        """Marks take their colours from the theme when drawn: draw them again."""
        self.stage_list.rebuild()
        self.node_tree.relabel()
        self.log_pane.recolour()
        self._show_banner()
        self.header.refresh()

    # --- layout -----------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        """Narrow: a slimmer tree with short addresses, log lines without timestamps.
        Short: the stage list scrolls (to what needs attention) and loses its column header."""
        short = height < SHORT
        self.screen.set_class(width < NARROW, "-narrow")
        self.screen.set_class(short, "-short")
        self.node_tree.compact = self.log_pane.compact = width < NARROW
        self.stage_list.show_header = not short

    def tick(self) -> None:
        self.stage_list.tick(self.clock())
        self.header.refresh()

    def _show_banner(self) -> None:
        if self.running:
            self.banner.display = False
        else:
            self.banner.show(self.progress, self.config.cluster.name, self.state_dir)

    # --- engine events ----------------------------------------------------------------------

    def on_engine_event(self, message: EngineEvent) -> None:
        """Stage, node and check events; health events wait for the health panel."""
        event = message.event
        change = self.progress.apply(event)
        if isinstance(event, CheckResult):
            self.log_pane.add([event])
        for stage in change.stages:
            self.stage_list.refresh_stage(stage)
        if FRONTEND in change.stages:
            self.node_tree.refresh_api()
        for node in change.nodes:
            self.node_tree.refresh_node(node)
        if change.stages:
            self.header.refresh()
            self.refresh_bindings()

    def on_log_batch(self, message: LogBatch) -> None:
        touched = set()
        for event in message.events:
            touched |= self.progress.apply(event).stages
        for stage in touched:
            self.stage_list.refresh_stage(stage)
        self.log_pane.add(message.events)

    # --- runs -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in RUN_ACTIONS and self.running:
            return None  # shown greyed out while a run is in progress
        if action == "retry_failed" and not self.progress.with_status(FAILED):
            return None
        return True

    def action_run_all(self) -> None:
        self.start_run()

    def action_run_stage(self) -> None:
        stage = self.stage_list.highlighted
        if stage:
            self.start_run(only=[stage])

    def action_run_from(self) -> None:
        stage = self.stage_list.highlighted
        if stage:
            self.start_run(start=stage)

    def action_retry_failed(self) -> None:
        failed = [s.info.name for s in self.progress.with_status(FAILED)]
        if failed:
            self.start_run(only=failed)

    def start_run(self, **selection: Any) -> None:
        """Run the engine in the pipeline worker (`selection`: only/start/until); one run at a time."""
        if self.running:
            return
        self.running = True
        self.progress.start_run(self.clock())
        self._show_banner()
        self.header.refresh()
        self._pipeline = self.run_worker(
            self._run_engine(selection), name="pipeline", group="pipeline", exclusive=True, exit_on_error=False
        )

    async def _run_engine(self, selection: dict[str, Any]) -> int:
        try:
            return await self.engine.run(self.bridge.sink, **selection)
        finally:
            self.bridge.flush()  # the last lines reach the pane before the run counts as over

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker is not self._pipeline or not worker.is_finished:
            return
        if event.state == WorkerState.SUCCESS:
            self.exit_code = worker.result
        elif event.state == WorkerState.CANCELLED:
            self.exit_code = EXIT_INTERRUPTED
        else:
            error = worker.error
            self.exit_code = error.exit_code if isinstance(error, KhwError) else EXIT_FAILED
            what = str(error) if isinstance(error, KhwError) else f"{type(error).__name__}: {error}"
            self.notify(what, title="the run stopped", severity="error", timeout=15, markup=False)
        self.progress.end_run(self.clock())
        self.running = False
        self._show_banner()
        self.header.refresh()

    # --- filters, log, search ---------------------------------------------------------------

    def on_node_tree_nodes_selected(self, message: NodeTree.NodesSelected) -> None:
        self._pick = message.pick
        self._refilter()

    def on_stage_list_stage_selected(self, message: StageList.StageSelected) -> None:
        self._stage = message.stage
        self._refilter()

    def action_clear_filters(self) -> None:
        self._pick, self._stage = None, None
        self.stage_list.clear_choice()
        self._refilter()

    def _refilter(self) -> None:
        pick = self._pick
        self.log_pane.set_filter(LogFilter(pick.nodes if pick else None, pick.label if pick else "", self._stage))

    def action_focus_log(self) -> None:
        self.log_pane.log_widget.focus()

    def action_search(self) -> None:
        self.log_pane.open_search()

    # --- quitting ---------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """Quit at once when idle; while a run is in progress, ask first."""
        if not self.running:
            self.exit(self.exit_code)
            return
        stage = self.progress.running
        self.push_screen(ConfirmQuit(stage.info.name if stage else None), self._quit_answered)

    def _quit_answered(self, stop: bool | None) -> None:
        if stop:
            self.run_worker(self._stop_and_exit(), name="quit", group="quit", exit_on_error=False)

    async def _stop_and_exit(self) -> None:
        self.notify("stopping the build cleanly…", timeout=STOP_TIMEOUT)
        self.engine.cancel()
        worker = self._pipeline
        if worker is not None:
            try:
                self.exit_code = await asyncio.wait_for(worker.wait(), STOP_TIMEOUT)
            except (TimeoutError, WorkerCancelled, WorkerFailed):  # on timeout, wait_for cancelled it
                self.exit_code = EXIT_INTERRUPTED
        self.exit(self.exit_code)


# The one way to build the app (CLI, tests, screenshots): everything it shows is injected.
make_app = KhwApp
