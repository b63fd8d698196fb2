"""Teardown: the modal lists exactly the provider's plan, nothing is deleted without typing the
cluster's name, and a confirmed teardown runs like a build (a row, its lines in the log)."""

from __future__ import annotations

from textual.notifications import Notify
from textual.widgets import Button, Input

from khwtui.core.errors import OperationError
from khwtui.tui.app import make_app
from khwtui.tui.confirm import ConfirmQuit
from khwtui.tui.contracts import Services
from khwtui.tui.teardown_screen import ConfirmTeardown

from .fake_engine import FakeEngine, load_stream
from .fake_services import FakeTeardown, build_events
from .support import FrozenClock, gcp_config, gcp_topology, replay, row, wait_until

SIZE = (120, 40)
CLUSTER = "kubernetes-the-hard-way"


def app_with(teardown: FakeTeardown, engine: FakeEngine | None = None):
    config = gcp_config()
    engine = engine or FakeEngine([])
    return make_app(config, gcp_topology(config), engine, initial=build_events(), clock=FrozenClock(), services=Services(teardown=teardown))


async def open_modal(pilot) -> ConfirmTeardown:
    await pilot.press("d")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmTeardown), "the teardown modal")
    await pilot.pause()
    return pilot.app.screen


def notes(seen) -> list[tuple[str, str]]:
    return [(m.notification.title, m.notification.message) for m in seen if isinstance(m, Notify)]


async def test_the_modal_lists_exactly_the_plan_and_escape_deletes_nothing() -> None:
    teardown = FakeTeardown()
    app = app_with(teardown)
    seen = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        modal = await open_modal(pilot)
        assert teardown.plans == 1 and modal.plan == teardown.plan
        table = modal.query_one("#plan-table").content
        assert table.row_count == len(teardown.plan) == 16
        assert [str(c) for c in table.columns[1].cells] == [r.name for r in teardown.plan]
        assert str(modal.query_one("#count").content) == (
            "16 resources: forwarding rule × 1 · target pool × 1 · http health check × 1 · firewall × 4"
            " · route × 2 · instance × 4 · address × 1 · subnet × 1 · network × 1"
        )
        assert modal.question == f"Delete cluster {CLUSTER}? These 16 resources go, with everything on them:"
        assert isinstance(modal.focused, Input)  # the red button is never the first focus
        assert modal.query_one("#delete", Button).disabled
        await pilot.press("enter")  # Enter on the empty name box deletes nothing
        assert app.screen is modal
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmTeardown), "the modal to close")
        await app.workers.wait_for_complete()
    assert teardown.teardowns == 0
    assert ("teardown", "nothing was deleted") in notes(seen)


async def test_a_wrong_name_keeps_the_button_off_and_keep_deletes_nothing() -> None:
    teardown = FakeTeardown()
    app = app_with(teardown)
    async with app.run_test(size=SIZE) as pilot:
        modal = await open_modal(pilot)
        await pilot.press(*"kubernetes-the-easy-way", "enter")
        assert app.screen is modal and modal.query_one("#delete", Button).disabled
        await pilot.click("#keep")
        await wait_until(pilot, lambda: app.screen is not modal, "the modal to close")
        await app.workers.wait_for_complete()
    assert teardown.teardowns == 0


async def test_typing_the_name_runs_the_teardown_like_a_build() -> None:
    teardown = FakeTeardown()
    engine = FakeEngine([])
    app = app_with(teardown, engine)
    seen = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        modal = await open_modal(pilot)
        await pilot.press(*CLUSTER)
        assert not modal.query_one("#delete", Button).disabled
        await pilot.press("enter")
        await wait_until(pilot, lambda: teardown.teardowns == 1 and not app.tearing_down, "the teardown to finish")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert row(app, "teardown") == {"mark": "✔", "stage": "teardown", "detail": "deleted 16 resources", "time": "0:00"}
        assert [line.split(" ✔ ")[-1].split(" │ ")[-1] for line in app.log_pane.lines[-2:]] == [
            "deleting network kubernetes-the-hard-way",
            "deleted network kubernetes-the-hard-way",
        ]
        deleted = [line for line in app.log_pane.lines if " teardown " in line and "deleted " in line]
        assert len(deleted) == 16
        assert {row(app, s)["mark"] for s in app.progress.stages} == {"·"}
        assert row(app, "etcd")["detail"] == "torn down"
        assert app.node_tree.label_of("controller-0").startswith("○ controller-0")
        assert app.banner.sentence == f"{CLUSTER} is torn down (deleted 16 resources) — press r to build it again"
        assert ("teardown done", f"{CLUSTER}: 16 resources deleted") in notes(seen)
    assert engine.calls == []  # a teardown is not a build


async def test_a_failing_teardown_says_why_on_its_row_and_in_a_notification() -> None:
    teardown = FakeTeardown(error=OperationError("route kubernetes-the-hard-way-route-10-200-1-0-24: 403 Forbidden"))
    app = app_with(teardown)
    seen = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await open_modal(pilot)
        await pilot.press(*CLUSTER, "enter")
        await wait_until(pilot, lambda: app.progress.teardown is not None and app.progress.teardown.status == "failed", "the failure")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert row(app, "teardown")["mark"] == "✖"
        why = "route kubernetes-the-hard-way-route-10-200-1-0-24: 403 Forbidden"
        assert row(app, "teardown")["detail"].replace(" ", "") == why.replace(" ", "")  # wrapped onto two lines
        assert row(app, "etcd")["mark"] == "✔"  # nothing is marked torn down
        assert ("teardown failed", "route kubernetes-the-hard-way-route-10-200-1-0-24: 403 Forbidden") in notes(seen)
        assert not app.tearing_down and app.check_action("teardown", ()) is True  # it can be tried again


async def test_teardown_waits_while_a_build_runs_and_is_hidden_without_a_provider() -> None:
    engine = FakeEngine(load_stream("gcp_build_in_progress"), hold=True)
    app = app_with(FakeTeardown(), engine)
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        assert app.check_action("teardown", ()) is None  # greyed out
        await pilot.press("d")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmTeardown)
        engine.release()
    config = gcp_config()
    bare = make_app(config, gcp_topology(config), FakeEngine([]))
    async with bare.run_test(size=SIZE):
        assert bare.check_action("teardown", ()) is False


async def test_quitting_during_a_teardown_asks_and_stops_it() -> None:
    teardown = FakeTeardown(hold=True)
    app = app_with(teardown)
    async with app.run_test(size=SIZE) as pilot:
        await open_modal(pilot)
        await pilot.press(*CLUSTER, "enter")
        await wait_until(pilot, lambda: teardown.teardowns == 1 and app.tearing_down, "the teardown to start")
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmQuit), "the quit question")
        assert app.screen.question.startswith("The teardown is running. Stop it and quit?")
        await pilot.press("y")
        await wait_until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == 130
    assert app.progress.teardown.status == "failed"
    assert app.progress.teardown.detail == "interrupted: press d to delete what is left"
