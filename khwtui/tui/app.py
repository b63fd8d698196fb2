"""The khwtui app: one screen that shows the build live, keeps probing its health, and starts,
slices, stops and tears down runs.

`make_app` (the class itself) is the one factory: the CLI, every test and tools/screenshots.py
build the app through it, with the engine, the clock, the saved state and the services
(health, certificates, teardown, shell, cost) injected. The engine runs in an app-owned async
worker (group "pipeline"); its events reach the widgets only through the bridge. Health rounds
run in group "health", one at a time, and wait while a modal screen is open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import events, getters
from textual.app import App, ComposeResult, SuspendNotSupported, SystemCommand
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerCancelled, WorkerFailed, WorkerState

from khwtui.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, KhwError
from khwtui.core.events import (
    FAILED,
    PASSED,
    PENDING,
    RUNNING,
    CheckResult,
    Event,
    HealthChanged,
    LogLines,
    NodeChanged,
    StageChanged,
)
from khwtui.model.config import Config
from khwtui.model.topology import Topology
from khwtui.transport.node_ssh import open_shell
from khwtui.tui.banner import Banner
from khwtui.tui.bridge import FLUSH_INTERVAL, Bridge, EngineEvent, LogBatch
from khwtui.tui.certs_screen import CertsScreen
from khwtui.tui.commands import WIDE_ONLY, TargetCommands, bindings, system_commands
from khwtui.tui.confirm import ConfirmQuit
from khwtui.tui.contracts import EngineLike, Services, TeardownLike
from khwtui.tui.explain_screen import ExplainScreen
from khwtui.tui.footer import KeyFooter
from khwtui.tui.header import BuildHeader
from khwtui.tui.health_board import describe
from khwtui.tui.health_panel import HealthPanel, clock_time
from khwtui.tui.log_pane import LogPane
from khwtui.tui.log_store import LogFilter
from khwtui.tui.node_log import NodeLogScreen, log_path
from khwtui.tui.node_tree import NodeTree, Pick
from khwtui.tui.progress import TEARDOWN, Change, Progress
from khwtui.tui.renew_screen import ConfirmRenew
from khwtui.tui.stage_list import StageList
from khwtui.tui.teardown_screen import ConfirmTeardown

TICK = 1.0  # seconds between clock updates (header, running stage)
HEALTH_INTERVAL = 5.0  # seconds between the starts of two health rounds
STOP_TIMEOUT = 60.0  # how long quitting waits for the engine to stop cleanly
NARROW, SHORT = 110, 32  # below these terminal sizes the layout compacts
RUN_ACTIONS = ("run_all", "run_stage", "run_from", "retry_failed", "teardown")
LIGHT, DARK = "textual-light", "textual-dark"
NO_SERVICES = Services()  # tests of the build alone: no probes, certificates, teardown or shell
MAIN_WIDGETS = (BuildHeader, Banner, NodeTree, StageList, LogPane, HealthPanel, KeyFooter)  # what timers touch


class KhwApp(App[int | None]):
    """The main screen over one engine. Build it with `make_app(config, topo, engine, *,
    initial=(), clock=time.time, state_dir=None, services=Services(), health_interval=5.0)`:
    `initial` are events that rebuild the saved state (a resumed cluster), `clock` drives every
    elapsed time shown, `state_dir` holds the full logs. `run()` returns the exit code of the
    last run (None when nothing ran).
    """

    TITLE = "khwtui"
    CSS = """
    #top { height: auto; }
    #nodes { width: 50; height: 100%; }
    #stages { width: 1fr; height: auto; }
    #bottom { height: 1fr; }
    .-narrow #nodes { width: 28; }
    .-narrow #bottom { layout: vertical; }
    .-narrow #health { width: 1fr; height: 2fr; max-height: 7; }
    .-narrow #logpane { min-height: 3; }  /* the health panel never squeezes out the log's last line */
    .-short #top { height: 12; }
    .-short #stages { height: 100%; }
    Footer.-compact FooterKey.-command-palette { padding-right: 1; }  /* covers a key cut off by a narrow terminal */
    """
    BINDINGS: ClassVar[list[BindingType]] = bindings()
    COMMANDS = App.COMMANDS | {TargetCommands}

    running: reactive[bool] = reactive(False, bindings=True)
    tearing_down: reactive[bool] = reactive(False, bindings=True)

    header = getters.query_one(BuildHeader)
    banner = getters.query_one(Banner)
    node_tree = getters.query_one(NodeTree)
    stage_list = getters.query_one(StageList)
    log_pane = getters.query_one(LogPane)
    health_panel = getters.query_one(HealthPanel)
    footer = getters.query_one(KeyFooter)

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
        services: Services = NO_SERVICES,
        health_interval: float = HEALTH_INTERVAL,
    ) -> None:
        super().__init__()
        self._autostart = autostart  # a slice from the command line, run as soon as the screen is up
        self.config, self.topo, self.engine = config, topo, engine
        self.state_dir = state_dir
        self.clock = clock
        self.services = services
        self.health_interval = health_interval
        self.progress = Progress(list(engine.stages), topo)
        self.bridge = Bridge(self)
        self.exit_code: int | None = None  # of the last run in this session
        self._initial = list(initial)
        for event in self._initial:
            self.progress.apply(event)
        self._pipeline: Worker[int] | None = None
        self._teardown: Worker[None] | None = None
        self._health: Worker[None] | None = None
        self._health_timer: Timer | None = None
        self.health_paused = False  # while a modal screen is open
        self._pick: Pick | None = None
        self._stage: str | None = None

    def compose(self) -> ComposeResult:
        yield BuildHeader(self.config, self.progress, self.clock, running=lambda: self.busy, cost=self.services.cost_per_hour)
        yield Banner()
        with Horizontal(id="top"):
            yield NodeTree(self.topo, self.progress)
            yield StageList(self.progress, self.clock())
        with Horizontal(id="bottom"):
            yield LogPane([n.name for n in self.topo.nodes])
            yield HealthPanel(self.progress.health, self.health_interval)
        yield KeyFooter(WIDE_ONLY)

    def on_mount(self) -> None:
        self.log_pane.add(e for e in self._initial if isinstance(e, (LogLines, CheckResult)))
        self.set_interval(FLUSH_INTERVAL, self.bridge.flush, name="log-flush")
        self.set_interval(TICK, self.tick, name="clock")
        self._fit(self.size.width, self.size.height, initial=True)
        self._show_banner()
        self.theme_changed_signal.subscribe(self, self._recolour)
        self.screen_change_signal.subscribe(self, self._screen_changed)
        if self.services.health is not None:
            self._health_timer = self.set_interval(self.health_interval, self.health_tick, name="health")
            self.health_tick()
        if self._autostart is not None:
            self.start_run(**self._autostart)

    @property
    def busy(self) -> bool:
        """A build or a teardown is running."""
        return self.running or self.tearing_down

    @property
    def built(self) -> bool:
        """The main screen's widgets exist: not yet true before compose, no longer once shutdown
        has removed any of them (one by one), when timers may still fire once."""
        return all(self.query_one_optional(kind) is not None for kind in MAIN_WIDGETS)

    def _recolour(self, _theme: object) -> None:
        """Marks take their colours from the theme when drawn: draw them again (unless the
        screen is not built yet, or no longer: then there is nothing drawn to recolour)."""
        if not self.built:
            return
        self.stage_list.rebuild()
        self.node_tree.relabel()
        self.log_pane.recolour()
        self.health_panel.redraw()
        self._show_banner()
        self.header.refresh()

    # --- layout -----------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int, *, initial: bool = False) -> None:
        """Narrow: a slimmer tree with short addresses, log lines without timestamps, fewer keys
        in the footer, and the health panel folded under the log (hidden until h; never shown
        without probes). Short: the stage list scrolls (to what needs attention) and loses its
        column header. The classes go on the main screen, even while a modal is on top."""
        main, narrow = self.screen_stack[0], width < NARROW
        if initial or narrow != main.has_class("-narrow"):
            self.health_panel.display = not narrow and self.services.health is not None
        main.set_class(narrow, "-narrow")
        main.set_class(height < SHORT, "-short")
        self.footer.narrow = narrow
        self.node_tree.compact = self.log_pane.compact = narrow
        self.stage_list.show_header = height >= SHORT

    def tick(self) -> None:
        if not self.built:
            return
        self.stage_list.tick(self.clock())
        self.header.refresh()

    def _show_banner(self) -> None:
        if self.busy:
            self.banner.display = False
        else:
            self.banner.show(self.progress, self.config.cluster.name, self.state_dir)

    # --- engine events ----------------------------------------------------------------------

    def on_engine_event(self, message: EngineEvent) -> None:
        """Stage, node, check and single health events; a failed stage is also announced."""
        event = message.event
        change = self.progress.apply(event)
        if isinstance(event, CheckResult):
            self.log_pane.add([event])
        if isinstance(event, HealthChanged):
            self.health_panel.redraw()
        if isinstance(event, StageChanged) and event.status == FAILED and (view := self.progress.view(event.stage)):
            self.notify(view.reason or "its log says why", title=f"{event.stage} failed", severity="error", timeout=10, markup=False)
        self._show_change(change)

    def _show_change(self, change: Change) -> None:
        for stage in change.stages:
            self.stage_list.refresh_stage(stage)
        if change.stages:  # compute reserves a cloud's static address, a teardown releases it
            self.node_tree.refresh_api(self.services.api_address() if self.services.api_address else self.topo.api_address)
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
        offered = {
            "teardown": self.services.teardown is not None,
            "show_certs": self.services.certs is not None,
            "explain_stage": self.services.explain is not None,
            "probe_now": self.services.health is not None,
            "toggle_health": self.services.health is not None,
            "node_log": self.state_dir is not None,
            "node_shell": self.can_open_shell,
        }
        if not offered.get(action, True):
            return False  # hidden: this session cannot do it at all
        if action in RUN_ACTIONS and self.busy:
            return None  # shown greyed out while a build or teardown is in progress
        if action == "retry_failed" and not self.progress.with_status(FAILED):
            return None
        if action in ("node_log", "node_shell") and self.selected_node is None:
            return None
        if action == "probe_now" and (self.health_probing or self.tearing_down):
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
        if self.busy:
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
        if worker is self._health and event.state == WorkerState.ERROR:
            self.health_panel.set_status(f"round failed: {_what(worker.error)}")
        if worker is not self._pipeline or not worker.is_finished:
            return
        if event.state == WorkerState.SUCCESS:
            self.exit_code = worker.result
        elif event.state == WorkerState.CANCELLED:
            self.exit_code = EXIT_INTERRUPTED
        else:
            error = worker.error
            self.exit_code = error.exit_code if isinstance(error, KhwError) else EXIT_FAILED
            self.notify(_what(error), title="the run stopped", severity="error", timeout=15, markup=False)
        self.progress.end_run(self.clock())
        self.running = False
        self._show_banner()
        self.header.refresh()

    # --- health -----------------------------------------------------------------------------

    @property
    def health_probing(self) -> bool:
        return self._health is not None and not self._health.is_finished

    def health_tick(self) -> None:
        """Start a probe round, unless one is still running (rounds never overlap) or a
        teardown is deleting what would be probed, or the app is shutting down (its panel is gone)."""
        probe = self.services.health
        if probe is None or not self.is_running or self.health_probing or self.health_paused or self.tearing_down or not self.built:
            return
        self.health_panel.set_status("probing…")
        self._health = self.run_worker(self._probe_round(probe), name="health", group="health", exit_on_error=False)
        self.refresh_bindings()

    def action_probe_now(self) -> None:
        self.health_tick()

    async def _probe_round(self, probe: Callable[[], Awaitable[list[HealthChanged]]]) -> None:
        self.apply_health_round(await probe())

    def apply_health_round(self, results: list[HealthChanged]) -> None:
        """Show a round: the panel, and the marks of every stage and node it turned red or back."""
        if not self.is_running:  # a round that ends while the app shuts down has no panel to show
            return
        board = self.progress.health
        failing_before = {(e.probe, e.node) for e in board.failing()}
        self._show_change(self.progress.health_round(results))
        self.health_panel.redraw()
        taken = f" · {clock_time(board.last_round)}" if board.last_round else ""
        self.health_panel.set_status(f"round {board.rounds}{taken}")
        self.header.refresh()
        self.refresh_bindings()
        for event in board.failing():
            if (event.probe, event.node) not in failing_before:
                self.notify(describe(event), title="probe failing", severity="warning", timeout=10, markup=False)

    def _screen_changed(self, screen: Screen) -> None:
        """Rounds wait while a modal screen (or the palette) is open, and go on after it closes."""
        if self.screen_stack:  # empty while the app shuts down
            self._hold_health(screen is not self.screen_stack[0])

    def _hold_health(self, hold: bool) -> None:
        """Pause the rounds, or let them go on."""
        self.health_paused = hold
        if self._health_timer is not None:
            (self._health_timer.pause if hold else self._health_timer.resume)()

    def action_toggle_health(self) -> None:
        self.health_panel.display = not self.health_panel.display

    # --- explanations, certificates, node log, shell, theme ------------------------------------

    def action_explain_stage(self) -> None:
        stage = self.stage_list.highlighted
        if stage:
            self.explain(stage)

    def explain(self, stage: str) -> None:
        if self.services.explain is not None:
            self.push_screen(ExplainScreen(stage, self.services.explain))

    def action_show_certs(self) -> None:
        source = self.services.certs
        if source is None:
            return
        try:
            rows = source()
        except (KhwError, OSError) as exc:
            self.notify(str(exc), title="cannot read the certificates", severity="error", markup=False)
            return
        self.push_screen(CertsScreen(rows))

    def renew_certificates(self, leaves: list[str], suggested: list[str]) -> None:
        """From the certificates view: confirm, then renew in a worker; the view reopens fresh."""
        if self.services.renew is not None and not self.busy:
            self.run_worker(self._renew_flow(self.services.renew, leaves, suggested), name="renew", group="renew", exclusive=True, exit_on_error=False)
        elif self.busy:
            self.notify("a build or teardown is running; renew when it is done", title="renew", severity="warning")

    async def _renew_flow(self, renew: Callable[[list[str]], Awaitable[str]], leaves: list[str], suggested: list[str]) -> None:
        names = await self.push_screen_wait(ConfirmRenew(leaves, suggested))
        if not names:
            self.notify("nothing was renewed", title="renew", timeout=4)
            return
        self.notify(f"renewing {', '.join(names)}: rolling out node by node", title="renew", timeout=4)
        try:
            summary = await renew(names)
        except (KhwError, OSError) as exc:
            self.notify(_what(exc), title="renewal failed", severity="error", markup=False)
            return
        self.notify(summary, title="renewed", timeout=8, markup=False)
        if isinstance(self.screen, CertsScreen):
            self.pop_screen()
            self.action_show_certs()

    @property
    def selected_node(self) -> str | None:
        """The node under the tree's cursor ("" for this machine), None on a group."""
        tree = self.query_one_optional(NodeTree)  # the footer asks before the tree is mounted
        node = tree.cursor_node if tree is not None else None
        pick = node.data if node is not None else None
        if pick is None or len(pick.nodes) != 1:
            return None
        return next(iter(pick.nodes))

    def on_tree_node_highlighted(self) -> None:
        self.refresh_bindings()  # n and x follow the tree's cursor

    def action_node_log(self) -> None:
        if self.selected_node is not None:
            self.show_node_log(self.selected_node)

    def show_node_log(self, node: str) -> None:
        if self.state_dir is not None:
            self.push_screen(NodeLogScreen(node, log_path(self.state_dir / "logs", node)))

    @property
    def can_open_shell(self) -> bool:
        """A shell needs the terminal: not offered headless (tests, screenshots) or without a way in."""
        driver = self._driver
        return self.services.shell is not None and not self.is_headless and driver is not None and driver.can_suspend

    def action_node_shell(self) -> None:
        if self.selected_node:
            self.open_shell(self.selected_node)

    def open_shell(self, node: str) -> None:
        target = self.services.shell(node) if self.services.shell else None
        if target is None:
            self.notify(f"{node} has no pinned SSH endpoint yet; run the compute stage first", title="no shell", severity="warning")
            return
        if self._health is not None:
            self._health.cancel()  # the loop stands still while ssh runs: a round would time the wait
        self._hold_health(True)
        try:
            with self.suspend():
                code = open_shell(target)
        except SuspendNotSupported:
            self.notify("this terminal cannot hand itself over to ssh", title="no shell", severity="warning")
            return
        finally:
            self._hold_health(False)
        if code != 0:
            self.notify(f"ssh to {node} ended with exit status {code}", title="shell", severity="warning")

    def action_toggle_dark(self) -> None:
        self.theme = LIGHT if self.current_theme.dark else DARK

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from system_commands(self)

    # --- teardown ---------------------------------------------------------------------------

    def action_teardown(self) -> None:
        source = self.services.teardown
        if source is not None and not self.busy:
            self._teardown = self.run_worker(self._teardown_flow(source), name="teardown", group="teardown", exclusive=True, exit_on_error=False)

    async def _teardown_flow(self, source: TeardownLike) -> None:
        """Ask with the provider's exact plan; delete only after an explicit yes."""
        try:
            plan = await asyncio.to_thread(source.teardown_plan)
        except Exception as exc:  # noqa: BLE001 - whatever the provider raises is shown, nothing is deleted
            self.notify(_what(exc), title="cannot plan the teardown", severity="error", markup=False)
            return
        if not await self.push_screen_wait(ConfirmTeardown(self.config.cluster.name, plan)):
            self.notify("nothing was deleted", title="teardown", timeout=4)
            return
        await self._tear_down(source, len(plan))

    async def _tear_down(self, source: TeardownLike, count: int) -> None:
        """Run the teardown like a build: a "teardown" row, its lines in the log pane."""
        sink, clock = self.bridge.sink, self.clock
        self.tearing_down = True
        if self._health is not None:
            self._health.cancel()  # a round in flight would probe what is being deleted
        self.progress.begin_teardown()
        self.progress.start_run(clock())
        self.stage_list.rebuild()
        self._show_banner()
        sink(StageChanged(TEARDOWN.name, RUNNING, f"deleting {count} resources", clock()))
        try:
            await source.teardown(lambda line: sink(LogLines("", TEARDOWN.name, (line,), "out", clock())))
        except asyncio.CancelledError:
            sink(StageChanged(TEARDOWN.name, FAILED, "interrupted: press d to delete what is left", clock()))
            raise
        except Exception as exc:  # noqa: BLE001 - shown on the row, in the log and as a notification
            sink(LogLines("", TEARDOWN.name, (_what(exc),), "err", clock()))
            sink(StageChanged(TEARDOWN.name, FAILED, _what(exc), clock()))
        else:
            sink(StageChanged(TEARDOWN.name, PASSED, f"deleted {count} resources", clock()))
            for stage in self.progress.stages:
                sink(StageChanged(stage, PENDING, "torn down", clock()))
            for node in self.progress.nodes:
                sink(NodeChanged(node, PENDING, "", "torn down", "", clock()))
            self.apply_health_round([])
            self.notify(f"{self.config.cluster.name}: {count} resources deleted", title="teardown done", timeout=8)
        finally:
            self.bridge.flush()
            self.progress.end_run(clock())
            self.tearing_down = False
            self.call_later(self._show_banner)  # queued behind the events above, so it sees them applied
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
        """Quit at once when idle; while a build or a teardown runs, ask first."""
        if not self.busy:
            self.exit(self.exit_code)
            return
        stage = self.progress.running
        self.push_screen(ConfirmQuit(stage.info.name if stage else None), self._quit_answered)

    def _quit_answered(self, stop: bool | None) -> None:
        if stop:
            self.run_worker(self._stop_and_exit(), name="quit", group="quit", exit_on_error=False)

    async def _stop_and_exit(self) -> None:
        self.notify("stopping cleanly…", timeout=STOP_TIMEOUT)
        if self.tearing_down and self._teardown is not None:
            self._teardown.cancel()
            worker: Worker[Any] | None = self._teardown
        else:
            self.engine.cancel()
            worker = self._pipeline
        if worker is not None:
            try:
                result = await asyncio.wait_for(worker.wait(), STOP_TIMEOUT)
                self.exit_code = result if worker is self._pipeline else EXIT_INTERRUPTED
            except (TimeoutError, WorkerCancelled, WorkerFailed):  # on timeout, wait_for cancelled it
                self.exit_code = EXIT_INTERRUPTED
        self.exit(self.exit_code)


def _what(error: BaseException | None) -> str:
    """A KhwError's own sentence; anything else with its type, since it is a bug to report."""
    return str(error) if isinstance(error, KhwError) else f"{type(error).__name__}: {error}"


# The one way to build the app (CLI, tests, screenshots): everything it shows is injected.
make_app = KhwApp
