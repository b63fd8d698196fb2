"""The main screen driven by replayed event streams: what each widget shows, and the keys."""

from __future__ import annotations

from textual.notifications import Notify

from khwtui.core.errors import UsageError
from khwtui.core.events import CheckResult, LogLines, StageChanged
from khwtui.tui.app import make_app
from khwtui.tui.confirm import ConfirmQuit
from khwtui.tui.contracts import Services
from khwtui.tui.log_pane import FOLLOWING, PAUSED
from khwtui.tui.marks import status_style

from .fake_engine import FakeEngine, RunCall, load_stream
from .support import (
    T0,
    FrozenClock,
    gcp_config,
    gcp_topology,
    local_topology,
    replay,
    row,
    shown_lines,
    wait_until,
)

SIZE = (120, 40)


def gcp_app(engine: FakeEngine, **kwargs):
    config = gcp_config()
    return make_app(config, gcp_topology(config), engine, clock=kwargs.pop("clock", FrozenClock()), **kwargs)


def assert_shows(app, texts: list[str]) -> None:
    """The log pane shows exactly these lines (each after its timestamp, node and stage columns)."""
    lines = list(app.log_pane.lines)
    assert len(lines) == len(texts)
    assert all(line.endswith(f" {text}") for line, text in zip(lines, texts, strict=True)), lines


def marks(app) -> dict[str, str]:
    return {name: row(app, name)["mark"] for name in app.progress.stages}


async def test_build_in_progress_shows_marks_nodes_and_progress() -> None:
    clock = FrozenClock(T0)
    engine = FakeEngine(load_stream("gcp_build_in_progress"), hold=True)
    app = gcp_app(engine, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        assert app.banner.display  # idle: says how to start
        await replay(pilot, engine)
        assert engine.calls == [RunCall(None, None, None)]
        assert list(marks(app).values()) == ["✔"] * 4 + ["⟳"] + ["·"] * 8
        assert row(app, "etcd")["detail"] == "2/2 members started, waiting for quorum"
        assert row(app, "compute")["time"] == "0:48"
        assert app.node_tree.label_of("controller-0") == "⟳ controller-0 10.240.0.10 · etcd"
        assert app.node_tree.label_of("worker-1") == "● worker-1     10.240.0.21 34.82.140.8"
        clock.now = T0 + 58
        app.tick()
        assert str(app.header.right).strip() == "⟳ etcd · 4/13 stages · 0:58"
        assert row(app, "etcd")["time"] == "0:07"
        assert not app.banner.display
        assert len(app.log_pane.lines) == shown_lines(engine.events)
        engine.release()


async def test_the_static_address_appears_in_the_tree_once_compute_has_reserved_it() -> None:
    config = gcp_config()
    engine = FakeEngine(load_stream("gcp_build_in_progress"), hold=True)
    app = make_app(config, gcp_topology(config, learned=False), engine, clock=FrozenClock(T0), services=Services(api_address=lambda: "34.83.1.2"))
    async with app.run_test(size=SIZE) as pilot:
        assert app.node_tree.api_text == "○ api address pending"
        await replay(pilot, engine)
        assert app.node_tree.api_text == "○ api 34.83.1.2"  # the frontend stage has not run yet
        engine.release()


async def test_failed_stage_row_carries_the_error_and_t_retries_it() -> None:
    engine = FakeEngine(load_stream("gcp_etcd_failed"))
    app = gcp_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        assert app.exit_code == 1 and not app.running
        assert row(app, "etcd")["mark"] == "✖"
        assert row(app, "etcd")["detail"] == "controller-1: x509: certificate is valid for 10.240.0.10, not 10.240.0.11"
        assert app.node_tree.label_of("controller-1").startswith("✖ controller-1")
        assert app.node_tree.label_of("controller-0").startswith("● controller-0")
        assert str(app.header.right).strip() == "4/13 stages · ✖ etcd failed · 0:00"
        assert app.banner.sentence.startswith("etcd failed: controller-1: x509")
        await pilot.pause()
        assert app.log_pane.log_widget.is_vertical_scroll_end  # the banner took room; the tail stays in view
        assert app.log_pane.lines[-3:] == [
            "14:14:26 controller-1 etcd          ✖ check endpoint health",
            "14:14:26 controller-1 etcd          ✖   $ etcdctl endpoint health",
            "14:14:26 controller-1 etcd          ✖   https://127.0.0.1:2379 is unhealthy: failed to commit proposal: context deadline exceeded",
        ]
        await pilot.press("t")
        await app.workers.wait_for_complete()
        assert engine.calls[-1] == RunCall(["etcd"], None, None)


async def test_failed_row_without_detail_shows_the_last_error_line() -> None:
    events = [
        StageChanged("compute", "running", "", T0),
        LogLines("", "compute", ("creating network",), "out", T0 + 1),
        LogLines("", "compute", ("googleapi: Error 403: Compute Engine API has not been used in project khw-demo-1234",), "err", T0 + 2),
        StageChanged("compute", "failed", "", T0 + 3),
    ]
    engine = FakeEngine(events)
    app = gcp_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        assert row(app, "compute")["mark"] == "✖"
        assert row(app, "compute")["detail"].startswith("googleapi: Error 403: Compute Engine API")


async def test_unverified_rows_say_why_and_never_pass() -> None:
    topo = local_topology()
    engine = FakeEngine(load_stream("local_finished_unverified"))
    app = make_app(topo.config, topo, engine, clock=FrozenClock())
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        assert app.exit_code == 3
        assert row(app, "dns")["mark"] == "?"
        assert row(app, "dns")["detail"] == "the offline test bed has no registry: CoreDNS image cannot be pulled"
        assert row(app, "smoke")["mark"] == "?"
        assert row(app, "smoke")["detail"] == "port-forward: discovery lacks pods/portforward on this apiserver stand-in"
        assert str(app.header.right).strip() == "13/13 stages · ? 2 unverified · 0:00"
        assert app.banner.sentence.startswith("all 13 stages done; not verifiable here: dns, smoke")
        assert app.node_tree.label_of("lb") == "● lb           10.240.0.2"


async def test_on_a_short_terminal_the_stage_list_scrolls_to_what_needs_attention() -> None:
    topo = local_topology()
    engine = FakeEngine(load_stream("local_finished_unverified"))
    app = make_app(topo.config, topo, engine, clock=FrozenClock())
    async with app.run_test(size=(100, 30)) as pilot:
        await replay(pilot, engine)
        table = app.stage_list
        assert app.screen.has_class("-short") and app.node_tree.compact
        assert 0 < table.scroll_y == table.max_scroll_y  # the unverified smoke row, last, is in view
        assert app.node_tree.label_of("worker-1") == "● worker-1     .21"


async def test_selecting_a_node_and_a_stage_narrows_the_log() -> None:
    engine = FakeEngine(load_stream("gcp_build_in_progress"), hold=True)
    app = gcp_app(engine)
    logs = [e for e in engine.events if isinstance(e, LogLines)]
    on_controller_1 = [text for e in logs if e.node == "controller-1" for text in e.lines]
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        app.node_tree.focus()
        app.node_tree.cursor_line = 2  # controllers, controller-0, controller-1
        await pilot.press("enter")
        assert_shows(app, on_controller_1)
        assert app.log_pane.title == "Log · controller-1 (Esc: all)"

        app.node_tree.cursor_line = 0  # the controllers group: both controllers
        await pilot.press("enter")
        assert len(app.log_pane.lines) == sum(len(e.lines) for e in logs if e.node.startswith("controller"))

        app.stage_list.focus()
        app.stage_list.move_cursor(row=0)  # compute: logged on every node and locally
        await pilot.press("enter")
        both = [t for e in logs if e.node.startswith("controller") and e.stage == "compute" for t in e.lines]
        assert_shows(app, both)
        assert app.log_pane.title == "Log · controllers · compute (Esc: all)"

        await pilot.press("escape")
        assert len(app.log_pane.lines) == shown_lines(engine.events)
        assert app.log_pane.title == "Log · all nodes · all stages"
        engine.release()


async def test_follow_mode_stops_when_scrolling_up_and_resumes_at_the_end() -> None:
    engine = FakeEngine([LogLines("worker-0", "workers", tuple(f"apt line {i}" for i in range(200)), "out", T0)], hold=True)
    app = gcp_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        pane, log = app.log_pane, app.log_pane.log_widget
        assert pane.following and log.is_vertical_scroll_end
        assert pane.status == FOLLOWING
        log.focus()
        await pilot.press("pageup")
        assert not pane.following
        assert pane.status == PAUSED
        top = log.scroll_y
        app.bridge.sink(LogLines("worker-0", "workers", ("late line",), "out", T0 + 1))
        await wait_until(pilot, lambda: len(pane.lines) == 201, "the late line in the pane")
        assert log.scroll_y == top and not pane.following  # the view stays where the user put it
        await pilot.press("end")
        assert pane.following and pane.status == FOLLOWING
        app.bridge.sink(LogLines("worker-0", "workers", ("later line",), "out", T0 + 2))
        await wait_until(pilot, lambda: len(pane.lines) == 202, "the later line in the pane")
        await pilot.pause()
        assert log.is_vertical_scroll_end  # following again: the tail stays in view
        engine.release()


async def test_search_jumps_to_the_newest_match_and_steps_to_older_ones() -> None:
    lines = tuple(f"apt line {i}" for i in range(300))
    events = [
        LogLines("controller-1", "etcd", ("raft.node: elected leader at term 2",), "out", T0),
        LogLines("worker-0", "workers", lines, "out", T0 + 1),
        LogLines("controller-0", "etcd", ("raft.node: elected leader at term 3",), "out", T0 + 2),
        LogLines("worker-0", "workers", lines, "out", T0 + 3),
    ]
    engine = FakeEngine(events, hold=True)
    app = gcp_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        pane, log = app.log_pane, app.log_pane.log_widget
        await pilot.press("slash")
        assert pane.search_box.has_focus
        await pilot.press(*"ELECTED LEADER")  # case does not matter
        assert pane.matches == [0, 301]
        assert pane.current_match.endswith("raft.node: elected leader at term 3")
        assert log.scroll_y <= 301 < log.scroll_y + log.scrollable_content_region.height
        assert pane.status.startswith("match 2/2")
        assert not pane.following  # the jump left the tail
        await pilot.press("enter")
        assert pane.current_match.endswith("raft.node: elected leader at term 2")
        assert log.scroll_y == 0 and pane.status.startswith("match 1/2")
        await pilot.press("escape")
        assert not pane.has_class("-searching") and pane.matches == []
        engine.release()


async def test_q_during_a_run_asks_and_stopping_cancels_the_engine_and_exits() -> None:
    engine = FakeEngine(load_stream("gcp_build_in_progress"), hold=True)
    app = gcp_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmQuit)
        assert app.screen.question.startswith("Stage etcd is running. Stop it and quit?")
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmQuit) and app.running and engine.cancels == 0
        await pilot.press("q")
        await pilot.press("y")
        await wait_until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert engine.cancels == 1
    assert app.return_value == 130  # the engine's own answer to cancel(), waited for


async def test_q_when_idle_quits_without_asking() -> None:
    engine = FakeEngine([])
    app = gcp_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await wait_until(pilot, lambda: app.return_code is not None, "the app to exit")
    assert engine.cancels == 0 and engine.calls == []


async def test_resumed_cluster_shows_saved_progress_and_offers_to_resume() -> None:
    engine = FakeEngine([], hold=False)
    app = gcp_app(engine, initial=load_stream("gcp_resumed"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.banner.display
        assert app.banner.sentence == "5 of 13 stages done — press r to resume"
        assert list(marks(app).values()) == ["✔"] * 5 + ["·"] * 8
        assert row(app, "control-plane")["detail"] == "interrupted"
        assert row(app, "etcd")["time"] == "0:21"
        assert row(app, "control-plane")["time"] == ""  # interrupted: back to pending
        assert app.node_tree.label_of("controller-0") == "● controller-0 10.240.0.10 35.247.31.18"
        assert str(app.header.right).strip() == "5/13 stages"
        assert app.check_action("retry_failed", ()) is None  # nothing failed: greyed out
        await replay(pilot, engine)
        assert engine.calls == [RunCall(None, None, None)]


async def test_s_and_f_run_the_stage_under_the_cursor() -> None:
    engine = FakeEngine([])
    app = gcp_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.stage_list.focus()
        app.stage_list.move_cursor(row=5)
        await replay(pilot, engine, "s")
        await replay(pilot, engine, "f")
        assert engine.calls == [RunCall(["control-plane"], None, None), RunCall(None, "control-plane", None)]


async def test_run_keys_are_greyed_out_while_a_run_is_in_progress() -> None:
    engine = FakeEngine(load_stream("gcp_build_in_progress"), hold=True)
    app = gcp_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        assert [app.check_action(a, ()) for a in ("run_all", "run_stage", "run_from", "retry_failed")] == [None] * 4
        await pilot.press("r", "s", "f")
        assert len(engine.calls) == 1
        engine.release()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.check_action("run_all", ()) is True


async def test_an_engine_error_is_shown_and_ends_the_run() -> None:
    engine = FakeEngine([], error=UsageError("stage rbac needs stage control-plane first; run `khwtui up --until control-plane`"))
    app = gcp_app(engine)
    seen = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await replay(pilot, engine)
        assert not app.running and app.exit_code == 2
        assert [m.notification.message for m in seen if isinstance(m, Notify)] == [str(engine.error)]


async def test_check_results_reach_the_log_of_their_node_and_stage() -> None:
    events = [CheckResult("etcd", "endpoint health", "failed", "controller-1", "https://127.0.0.1:2379 is unhealthy", T0)]
    engine = FakeEngine(events)
    app = gcp_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        assert app.log_pane.lines == [
            "14:13:20 controller-1 etcd          ✖ check endpoint health",
            "14:13:20 controller-1 etcd          ✖   https://127.0.0.1:2379 is unhealthy",
        ]


async def test_a_theme_change_recolours_the_marks() -> None:
    app = gcp_app(FakeEngine([]), initial=load_stream("gcp_resumed"))
    app.theme = "textual-dark"
    async with app.run_test(size=SIZE) as pilot:
        before = app.stage_list.get_cell("compute", "mark").spans[0].style
        assert before == status_style("passed", app.theme_variables)
        app.theme = "nord"
        await pilot.pause()
        after = app.stage_list.get_cell("compute", "mark").spans[0].style
        assert after == status_style("passed", app.theme_variables) != before
        assert app.node_tree.get_node_at_line(1).label.spans[0].style == after  # controller-0 passed


async def test_timers_firing_during_shutdown_do_nothing() -> None:
    """Textual removes the main screen's widgets before it stops the timers: a clock tick
    landing in between (seen in CI under load) must not raise."""
    app = gcp_app(FakeEngine([]))
    async with app.run_test(size=SIZE):
        assert app.query_one_optional("StageList") is not None
    assert app.query_one_optional("StageList") is None
    app.tick()
    app.health_tick()


async def test_timers_firing_while_the_main_screen_is_half_taken_down_do_nothing() -> None:
    """The widgets go one by one: a tick that finds the stage list but no longer the header (the
    stop's CI, test_the_node_log_wraps_long_lines..., NoMatches 'BuildHeader') must not raise."""
    app = gcp_app(FakeEngine([]))
    async with app.run_test(size=SIZE) as pilot:
        await app.header.remove()
        await pilot.pause()
        app.tick()
        app.health_tick()
