"""Live health: probe rounds on an interval, one at a time, paused under modals; a failing
probe turns its stage's and node's marks red at the next round, and back when it recovers."""

from __future__ import annotations

from textual.notifications import Notify

from khwtui.core.events import FAILED, PASSED
from khwtui.tui.app import make_app
from khwtui.tui.certs_screen import CertsScreen
from khwtui.tui.contracts import Services
from khwtui.tui.marks import status_style

from .fake_engine import FakeEngine
from .fake_services import FakeHealth, build_events, health_round
from .scenes import HEALTHY_AT, failing_round
from .support import FrozenClock, gcp_config, gcp_topology, row, wait_until

SIZE = (120, 40)
NEVER = 3600.0  # an interval no test outlives: rounds start at mount and when a test ticks


def healthy_app(health: FakeHealth, interval: float = NEVER, **services):
    config = gcp_config()
    return make_app(
        config,
        gcp_topology(config),
        FakeEngine([]),
        initial=build_events(),
        clock=FrozenClock(HEALTHY_AT),
        services=Services(health=health, **services),
        health_interval=interval,
    )


async def next_round(pilot, health: FakeHealth, rounds: int) -> None:
    await wait_until(pilot, lambda: pilot.app.progress.health.rounds >= rounds, f"health round {rounds}")
    await pilot.pause()


async def test_a_failing_probe_turns_its_marks_red_at_the_next_round_and_back() -> None:
    health = FakeHealth([health_round(), failing_round(), health_round()])
    app = healthy_app(health)
    seen = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await next_round(pilot, health, 1)  # the first round runs at mount
        error = status_style(FAILED, app.theme_variables)
        assert row(app, "etcd")["mark"] == "✔"
        assert app.node_tree.label_of("controller-1") == "● controller-1 10.240.0.11 35.247.31.19"
        assert str(app.header.health) == "● probes ok"

        app.health_tick()
        await next_round(pilot, health, 2)
        assert row(app, "etcd")["mark"] == "✖"
        assert app.stage_list.get_cell("etcd", "mark").spans[0].style == error
        assert row(app, "etcd")["detail"] == "probe failing: controller-1: etcd — context deadline exceeded"
        assert app.node_tree.label_of("controller-1") == "✖ controller-1 10.240.0.11 · etcd failing"
        assert app.node_tree.label_of("controller-0").startswith("● controller-0")
        assert [row(app, s)["mark"] for s in ("compute", "pki", "control-plane")] == ["✔", "✔", "✔"]
        assert str(app.header.health) == "✖ 1 probe failing"
        assert [(m.notification.title, m.notification.message) for m in seen if isinstance(m, Notify)] == [
            ("probe failing", "controller-1: etcd — context deadline exceeded")
        ]
        assert app.progress.stages["etcd"].status == PASSED  # the build's verdict is not rewritten

        app.health_tick()
        await next_round(pilot, health, 3)
        assert row(app, "etcd")["mark"] == "✔"
        assert app.stage_list.get_cell("etcd", "mark").spans[0].style == status_style(PASSED, app.theme_variables)
        assert row(app, "etcd")["detail"] == "2/2 members, quorum"
        assert app.node_tree.label_of("controller-1") == "● controller-1 10.240.0.11 35.247.31.19"


async def test_the_panel_shows_result_latency_and_time_of_every_probe() -> None:
    health = FakeHealth([health_round()])
    app = healthy_app(health)
    async with app.run_test(size=SIZE) as pilot:
        await next_round(pilot, health, 1)
        panel = app.health_panel
        assert panel.display and panel.border_title == "Health · every 3600 s"
        assert panel.status == "round 1 · 21:52:53"
        assert panel.plain.splitlines() == [
            "✔ ssh and sudo                     4/4",
            "  42 ms · 21:52:53",
            "✔ certificates   364 days left (admin)",
            "  3 ms · 21:52:53",
            "✔ etcd                             2/2",
            "  18 ms · 21:52:53",
            "✔ apiserver /livez and /readyz     2/2",
            "  24 ms · 21:52:53",
        ]


async def test_rounds_never_overlap() -> None:
    health = FakeHealth([health_round()], hold=True)
    app = healthy_app(health)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: health.in_flight == 1, "the first round to start")
        for _ in range(5):
            app.health_tick()
            await pilot.pause()
        assert health.calls == 1 and app.health_panel.status == "probing…"
        assert app.check_action("probe_now", ()) is None  # greyed out while a round runs
        health.release()
        await next_round(pilot, health, 1)
        await pilot.press("H")  # probe now
        await wait_until(pilot, lambda: health.calls == 2, "the second round")
        health.release()
        await next_round(pilot, health, 2)
        assert health.most_in_flight == 1


async def test_the_interval_starts_rounds_by_itself() -> None:
    health = FakeHealth([health_round()])
    app = healthy_app(health, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.progress.health.rounds >= 3, "three rounds from the interval timer", timeout=15)
        assert health.most_in_flight == 1


async def test_rounds_wait_while_a_modal_is_open() -> None:
    health = FakeHealth([health_round()])
    app = healthy_app(health, interval=0.2, certs=list)
    async with app.run_test(size=SIZE) as pilot:
        await next_round(pilot, health, 1)
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CertsScreen), "the certificates view", timeout=15)
        # the screen-change signal reaches the app on a later callback than the push itself
        await wait_until(pilot, lambda: app.health_paused, "the rounds to pause under the modal", timeout=15)
        calls = health.calls
        app.health_tick()  # a tick that was already due does nothing either
        await pilot.pause()
        assert health.calls == calls
        await pilot.press("escape")
        await wait_until(pilot, lambda: health.calls > calls, "rounds to go on after the modal closed", timeout=15)
        assert not app.health_paused


async def test_a_round_that_raises_is_shown_and_the_next_one_runs() -> None:
    calls = []

    async def broken():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("no route to host")
        return health_round()

    config = gcp_config()
    app = make_app(config, gcp_topology(config), FakeEngine([]), initial=build_events(), services=Services(health=broken), health_interval=NEVER)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.health_panel.status.startswith("round failed"), "the failed round")
        assert app.health_panel.status == "round failed: OSError: no route to host"
        app.health_tick()
        await wait_until(pilot, lambda: app.progress.health.rounds == 1, "the next round")
        assert app.health_panel.status == "round 1 · 21:52:53"


async def test_h_hides_and_shows_the_panel_and_at_80_columns_it_folds_under_the_log() -> None:
    health = FakeHealth([health_round()])
    app = healthy_app(health)
    async with app.run_test(size=(80, 24)) as pilot:
        await next_round(pilot, health, 1)
        assert not app.health_panel.display  # narrow: folded away until asked for
        await pilot.press("h")
        await pilot.pause()
        panel, log = app.health_panel, app.log_pane
        assert panel.display and panel.region.y >= log.region.bottom and panel.region.width == 80
        assert panel.plain.splitlines()[0].split() == ["✔", "ssh", "and", "sudo", "4/4", "42", "ms", "21:52:53"]
        await pilot.press("h")
        assert not panel.display


async def test_on_a_small_terminal_the_open_panel_leaves_the_log_a_line_and_stays_above_the_footer() -> None:
    health = FakeHealth([health_round()])
    app = healthy_app(health)
    async with app.run_test(size=(80, 24)) as pilot:
        await next_round(pilot, health, 1)
        await pilot.press("h")
        for banner_lines in (1, 2):  # a long next-step sentence wraps the banner onto a second line
            app.banner.update("resume " * (9 * banner_lines))
            await pilot.pause()
            assert app.banner.region.height == banner_lines
            panel, log = app.health_panel, app.log_pane
            assert log.region.height >= 3  # a line between the borders
            assert panel.region.y >= log.region.bottom and panel.region.bottom <= app.footer.region.y
            assert panel.region.height - 2 == 5 - banner_lines  # probes in view inside the border; the rest scroll
