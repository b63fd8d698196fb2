"""The explanation screen (`e` on a stage, or "Explain stage X" in the palette): the text of
`khwtui explain STAGE`, loaded off the event loop, searchable, closed with Escape."""

from __future__ import annotations

import threading

from textual.widgets import Input, TextArea

from khwtui.tui.app import KhwApp
from khwtui.tui.explain_screen import LOADING, ExplainScreen

from .support import wait_until
from .test_tui_commands import full_app, run_from_palette

SIZE = (80, 24)
TEXT = "\n".join(["5. etcd", "", "etcdctl endpoint health", *[f"line {i}" for i in range(60)], "etcdctl member list", "ETCDCTL again"])


async def open_explanation(pilot, stage: str = "etcd") -> ExplainScreen:
    app: KhwApp = pilot.app
    app.stage_list.focus()
    app.stage_list.move_cursor(row=list(app.progress.stages).index(stage))
    await pilot.press("e")
    await wait_until(pilot, lambda: isinstance(app.screen, ExplainScreen) and app.screen.text, "the explanation")
    return app.screen  # type: ignore[return-value]


async def test_e_opens_the_selected_stage_and_search_steps_through_every_match() -> None:
    asked: list[str] = []
    app = full_app()
    app.services = app.services.__class__(**{**app.services.__dict__, "explain": lambda stage: asked.append(stage) or TEXT})
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_explanation(pilot)
        assert asked == ["etcd"] and screen.area.text == TEXT and screen.query_one("#dialog").border_title == "Explain · etcd"
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"etcdctl", "enter")
        assert screen.matches == [((2, 0), (2, 7)), ((63, 0), (63, 7)), ((64, 0), (64, 7))]  # case-insensitive
        assert screen.area.selected_text == "etcdctl"
        screen.area.focus()
        await pilot.press("n")
        assert screen.area.selection.start == (63, 0) and screen.area.scroll_y > 0  # scrolled to it
        await pilot.press("n", "n")
        assert screen.area.selection.start == (2, 0)  # round again
        await pilot.press("escape")
        assert not isinstance(app.screen, ExplainScreen)


async def test_the_text_loads_off_the_event_loop_and_a_failure_is_shown() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []
    release = threading.Event()

    def slow(stage: str) -> str:
        threads.append(threading.get_ident())
        release.wait(10)
        raise OSError("state folder unreadable")

    app = full_app()
    app.services = app.services.__class__(**{**app.services.__dict__, "explain": slow})
    async with app.run_test(size=SIZE) as pilot:
        app.stage_list.focus()
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, ExplainScreen), "the screen")
        screen: ExplainScreen = app.screen  # type: ignore[assignment]
        assert str(screen.status.render()) == LOADING  # open at once, while the text is read
        release.set()
        await wait_until(pilot, lambda: "cannot explain" in str(screen.status.render()), "the failure")
        assert threads and threads[0] != loop_thread
        assert str(screen.status.render()) == "cannot explain compute: state folder unreadable"


async def test_the_palette_explains_any_stage() -> None:
    app = full_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await run_from_palette(pilot, "Explain stage routes")
        await wait_until(pilot, lambda: isinstance(app.screen, ExplainScreen) and app.screen.text, "the explanation")
        assert app.screen.query_one(TextArea).text == "what routes does"
