"""SVG snapshots of the main screen, each at 120x40 and 80x24, with a frozen clock.

Every test also asserts the content its picture shows, so a wrong-but-stable screen cannot
be accepted by `--snapshot-update` alone. `snap_compare` runs its own event loop, hence
plain `def` tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from khwtui.tui.app import KhwApp, make_app

from .fake_engine import FakeEngine, load_stream
from .support import T0, FrozenClock, gcp_config, gcp_topology, replay, row

SIZES = [pytest.param((120, 40), id="120x40"), pytest.param((80, 24), id="80x24")]
STATE_DIR = Path.home() / ".local/share/khwtui/kubernetes-the-hard-way"


def gcp_app(engine: FakeEngine, clock: FrozenClock, **kwargs) -> KhwApp:
    config = gcp_config()
    app = make_app(config, gcp_topology(config), engine, clock=clock, state_dir=STATE_DIR, **kwargs)
    app.theme = "textual-dark"  # whatever TEXTUAL_THEME says
    return app


def shows(shown: str, full: str) -> bool:
    """`shown` is `full`, or its start cut with an ellipsis where the width runs out."""
    return shown == full or (shown.endswith("…") and full.startswith(shown[:-1].rstrip()))


def screen(app: KhwApp) -> dict[str, object]:
    """What the picture must show, read from the widgets."""
    return {
        "marks": "".join(row(app, name)["mark"] for name in app.progress.stages),
        "header": str(app.header.right).strip(),
        "banner": app.banner.sentence if app.banner.display else None,
        "log lines": len(app.log_pane.lines),
    }


@pytest.mark.parametrize("size", SIZES)
def test_empty_screen(snap_compare, size) -> None:
    app = gcp_app(FakeEngine([]), FrozenClock())
    seen: dict[str, object] = {}

    async def look(pilot) -> None:
        seen.update(screen(pilot.app))

    assert snap_compare(app, terminal_size=size, run_before=look)
    assert seen == {
        "marks": "·" * 13,
        "header": "0/13 stages",
        "banner": "nothing built yet — press r to build kubernetes-the-hard-way (13 stages)"
        " · full logs in ~/.local/share/khwtui/kubernetes-the-hard-way/logs",
        "log lines": 0,
    }


@pytest.mark.parametrize("size", SIZES)
def test_build_in_progress(snap_compare, size) -> None:
    clock = FrozenClock(T0)
    engine = FakeEngine(load_stream("gcp_build_in_progress"), hold=True)
    app = gcp_app(engine, clock)
    seen: dict[str, object] = {}

    async def build(pilot) -> None:
        await replay(pilot, engine)
        clock.now = T0 + 58  # eight seconds into etcd
        pilot.app.tick()
        seen.update(screen(pilot.app), etcd=row(pilot.app, "etcd"), node=pilot.app.node_tree.label_of("controller-1"))

    assert snap_compare(app, terminal_size=size, run_before=build)
    assert seen["marks"] == "✔✔✔✔⟳" + "·" * 8
    assert seen["header"] == "⟳ etcd · 4/13 stages · 0:58"
    assert seen["banner"] is None
    etcd = seen["etcd"]
    assert (etcd["mark"], etcd["stage"], etcd["time"]) == ("⟳", "etcd", "0:07")
    assert shows(etcd["detail"], "2/2 members started, waiting for quorum")
    assert seen["node"].startswith("⟳ controller-1")


@pytest.mark.parametrize("size", SIZES)
def test_failed_stage(snap_compare, size) -> None:
    clock = FrozenClock(T0)
    engine = FakeEngine(load_stream("gcp_etcd_failed"))
    app = gcp_app(engine, clock)
    seen: dict[str, object] = {}

    async def fail(pilot) -> None:
        clock.now = T0 + 67  # the run ends when the stream does
        await replay(pilot, engine)
        seen.update(screen(pilot.app), etcd=row(pilot.app, "etcd"), node=pilot.app.node_tree.label_of("controller-1"))

    assert snap_compare(app, terminal_size=size, run_before=fail)
    assert seen["marks"] == "✔✔✔✔✖" + "·" * 8
    assert seen["header"] == "4/13 stages · ✖ etcd failed · 0:00"
    assert shows(seen["etcd"]["detail"], "controller-1: x509: certificate is valid for 10.240.0.10, not 10.240.0.11")
    assert seen["banner"].startswith("etcd failed: controller-1: x509: certificate is valid for 10.240.0.10, not 10.240.0.11")
    assert seen["node"].startswith("✖ controller-1")


@pytest.mark.parametrize("size", SIZES)
def test_resumed_cluster(snap_compare, size) -> None:
    app = gcp_app(FakeEngine([]), FrozenClock(T0), initial=load_stream("gcp_resumed"))
    seen: dict[str, object] = {}

    async def look(pilot) -> None:
        seen.update(screen(pilot.app), node=pilot.app.node_tree.label_of("worker-0"))

    assert snap_compare(app, terminal_size=size, run_before=look)
    assert seen["marks"] == "✔" * 5 + "·" * 8
    assert seen["header"] == "5/13 stages"
    assert seen["banner"] == "5 of 13 stages done — press r to resume"
    assert seen["node"].startswith("● worker-0")
