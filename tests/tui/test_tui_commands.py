"""Everything is reachable by keyboard: each action has a key in the footer and an entry in the
command palette; stage failures are announced; light and dark themes switch with a key."""

from __future__ import annotations

from textual.command import CommandList, CommandPalette
from textual.notifications import Notify

from khwtui.tui.app import KhwApp, make_app
from khwtui.tui.certs_screen import CertsScreen
from khwtui.tui.commands import COMMANDS, system_commands
from khwtui.tui.contracts import Services

from .fake_engine import FakeEngine, RunCall, load_stream
from .fake_services import FakeHealth, FakeTeardown, build_events, health_round
from .support import FrozenClock, gcp_config, gcp_topology, replay, wait_until

SIZE = (120, 40)


def full_app(engine: FakeEngine | None = None, **kwargs) -> KhwApp:
    config = gcp_config()
    services = Services(health=FakeHealth([health_round()]), certs=list, teardown=FakeTeardown(), cost_per_hour=lambda: 0.38,
                        explain=lambda stage: f"what {stage} does")
    app = make_app(config, gcp_topology(config), engine or FakeEngine([]), clock=FrozenClock(), services=services, health_interval=3600, **kwargs)
    app.theme = "textual-dark"
    return app


async def run_from_palette(pilot, query: str) -> None:
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), "the palette")
    await pilot.press(*query)
    palette = pilot.app.screen
    await wait_until(pilot, lambda: palette.query_one(CommandList).option_count > 0, f"a palette hit for {query!r}")
    await pilot.press("enter")
    await wait_until(pilot, lambda: not isinstance(pilot.app.screen, CommandPalette), "the palette to close")
    await pilot.pause()


def test_every_command_has_a_key_and_an_action() -> None:
    keys = {b.key: b.action for b in KhwApp.BINDINGS}
    for command in COMMANDS:
        assert keys[command.key] == command.action
        assert callable(getattr(KhwApp, f"action_{command.action}")), command.action
    assert len(keys) == len(COMMANDS)


async def test_the_palette_lists_every_action_possible_now(tmp_path) -> None:
    app = full_app(initial=build_events(), state_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        titles = {c.title for c in system_commands(app)}
        expected = {c.title for c in COMMANDS if c.title}
        # nothing failed; no node under the tree's cursor; no terminal to hand to ssh
        greyed = {"Retry the failed stages", "Full log of the selected node", "Shell on the selected node"}
        assert titles == expected - greyed
        app.node_tree.cursor_line = 2  # controller-1
        await pilot.pause()
        assert "Full log of the selected node" in {c.title for c in system_commands(app)}


async def test_palette_commands_open_views_and_run_stages() -> None:
    engine = FakeEngine([])
    app = full_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await run_from_palette(pilot, "certificates")
        assert isinstance(app.screen, CertsScreen)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, CertsScreen), "the view to close")
        await run_from_palette(pilot, "run stage etcd")
        await app.workers.wait_for_complete()
        assert engine.calls == [RunCall(["etcd"], None, None)]


async def test_the_footer_shows_the_keys() -> None:
    app = full_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        shown = [b.binding.key for b in app.screen.active_bindings.values() if b.binding.show and b.enabled]
        assert shown[:7] == ["r", "s", "f", "h", "e", "c", "d"]  # retry is greyed: nothing failed


async def test_ctrl_t_switches_between_light_and_dark() -> None:
    app = full_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+t")
        assert app.theme == "textual-light" and not app.current_theme.dark
        await pilot.press("ctrl+t")
        assert app.theme == "textual-dark"


async def test_a_failed_stage_is_announced() -> None:
    engine = FakeEngine(load_stream("gcp_etcd_failed"))
    app = full_app(engine)
    seen = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await replay(pilot, engine)
        failures = [(m.notification.title, m.notification.message, m.notification.severity) for m in seen if isinstance(m, Notify)]
        assert failures == [("etcd failed", "controller-1: x509: certificate is valid for 10.240.0.10, not 10.240.0.11", "error")]
