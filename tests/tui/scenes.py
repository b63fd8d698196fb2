"""The app's main screens as scenes: a fresh app (make_app, replayed streams, fixed clock,
fixed theme) and the keys and waits that bring it to the picture.

The snapshot tests and tools/screenshots.py both use these, so the README's screenshots are
exactly what the tests pin down. Scenes that need files (certificates, node logs) make them
under `workdir` at fixed times; nothing shown depends on the path.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual.pilot import Pilot
from textual.timer import Timer, TimerCallback
from textual.widgets import Input, TextArea

from khwtui.core.events import HealthChanged, LogLines
from khwtui.model.topology import Topology
from khwtui.tui.app import KhwApp, make_app
from khwtui.tui.contracts import Services
from khwtui.tui.footer import KeyFooter

if TYPE_CHECKING:
    from khwtui.artifacts.pki import Pki

from .fake_engine import FakeEngine, load_stream
from .fake_services import (
    FakeHealth,
    FakeTeardown,
    aged_pki,
    build_events,
    cert_rows,
    health_round,
)
from .support import T0, FrozenClock, drain, gcp_config, gcp_topology, replay, wait_until

STATE_DIR = Path.home() / ".local/share/khwtui/kubernetes-the-hard-way"  # shown on the empty screen
THEME = "textual-dark"
WIDE, SMALL = (120, 40), (80, 24)
COST = 0.38  # USD per hour: four e2-standard-2, the address and the forwarding rule (hand-written)
HEALTHY_AT = max(e.at for e in health_round())  # when the healthy stream's probe round ran


@dataclass(frozen=True)
class Scene:
    name: str
    size: tuple[int, int]
    build: Callable[[Path], KhwApp]
    prepare: Callable[[Pilot], Awaitable[None]]


def services(workdir: Path, topo: Topology, rounds: list[list[HealthChanged]], **extra) -> Services:
    """Every service, as fakes: probes replaying `rounds`, certificates from a real aged Pki."""
    pki = aged_pki(workdir / "pki", topo)
    return Services(
        health=FakeHealth(rounds),
        certs=lambda: cert_rows(pki, topo),
        teardown=extra.pop("teardown", FakeTeardown()),
        cost_per_hour=lambda: COST,
        **extra,
    )


def gcp_app(engine: FakeEngine, clock: FrozenClock, *, workdir: Path, rounds: list[list[HealthChanged]], **kwargs) -> KhwApp:
    config = gcp_config()
    topo = gcp_topology(config)
    state_dir = kwargs.pop("state_dir", STATE_DIR)
    return still(make_app(config, topo, engine, clock=clock, state_dir=state_dir, services=services(workdir, topo, rounds), **kwargs))


def still(app: KhwApp) -> KhwApp:
    """A scene's fixed look: the theme (whatever TEXTUAL_THEME says), no animation, and health
    rounds only at mount and when the scene starts one. The interval timer runs on wall time,
    which the frozen clock does not: on a loaded machine it added rounds to the picture
    ("round 3") or caught one in flight (the footer without its keys)."""
    app.theme = THEME
    app.animation_level = "none"
    set_interval = app.set_interval

    def health_timer_paused(interval: float, callback: TimerCallback | None = None, *, name: str | None = None, repeat: int = 0, pause: bool = False) -> Timer:
        return set_interval(interval, callback, name=name, repeat=repeat, pause=pause or name == "health")

    app.set_interval = health_timer_paused  # type: ignore[method-assign]
    return app


async def settle(pilot: Pilot) -> None:
    """Every health round started so far is on screen, the footer shows its keys, and the screen is redrawn."""
    app = pilot.app
    rounds = [w for w in app.workers if w.group == "health"]
    if rounds:
        await app.workers.wait_for_complete(rounds)
    await drain(app)
    # the footer composes its keys a refresh after the bindings settle: slow on a loaded machine
    await wait_until(pilot, lambda: all(footer.children for footer in app.screen_stack[0].query(KeyFooter)), "the footer's keys", timeout=30)
    await pilot.pause()
    for box in app.screen.query(Input):
        box.cursor_blink = False


# --- the build -------------------------------------------------------------------------------


def early_round() -> list[HealthChanged]:
    """What probes say while etcd is being built: compute and pki are done (the healthy
    stream's results for those stages, at the build's time)."""
    return [dataclasses.replace(e, at=T0 + 55) for e in health_round() if e.probe.split(":")[0] in ("compute", "pki")]


def build_in_progress(workdir: Path) -> KhwApp:
    return gcp_app(FakeEngine(load_stream("gcp_build_in_progress"), hold=True), FrozenClock(T0), workdir=workdir, rounds=[early_round()])


async def build_in_progress_steps(pilot: Pilot) -> None:
    app = pilot.app
    await replay(pilot, app.engine)
    app.clock.now = T0 + 58  # eight seconds into etcd
    app.tick()
    await settle(pilot)


def failed_stage(workdir: Path) -> KhwApp:
    return gcp_app(FakeEngine(load_stream("gcp_etcd_failed")), FrozenClock(T0 + 67), workdir=workdir, rounds=[early_round()])


async def failed_stage_steps(pilot: Pilot) -> None:
    """The run fails at etcd; the log is narrowed to the failing node and stage."""
    app = pilot.app
    await replay(pilot, app.engine)
    app.node_tree.focus()
    app.node_tree.cursor_line = 2  # controllers, controller-0, controller-1
    await pilot.press("enter")
    app.stage_list.focus()
    app.stage_list.move_cursor(row=4)  # etcd
    await pilot.press("enter")
    app.clear_notifications()  # the toast would cover the log this picture is about
    await settle(pilot)


# --- a built cluster -------------------------------------------------------------------------


def healthy(workdir: Path, rounds: list[list[HealthChanged]] | None = None) -> KhwApp:
    """The finished build as saved state, probed by the healthy stream's round."""
    clock = FrozenClock(HEALTHY_AT + 2)
    return gcp_app(FakeEngine([]), clock, workdir=workdir, rounds=rounds or [health_round()], initial=build_events())


async def healthy_steps(pilot: Pilot) -> None:
    await settle(pilot)


def failing_round() -> list[HealthChanged]:
    """The next round: etcd on controller-1 stops answering."""
    later = [dataclasses.replace(e, at=HEALTHY_AT + 5) for e in health_round()]
    return [
        dataclasses.replace(e, result="failed", latency_ms=5012.0, detail="context deadline exceeded")
        if e.probe == "etcd:etcd" and e.node == "controller-1"
        else dataclasses.replace(e, latency_ms=5012.0) if e.probe == "etcd:etcd" else e
        for e in later
    ]


def probe_failing(workdir: Path) -> KhwApp:
    return healthy(workdir, rounds=[health_round(), failing_round()])


async def probe_failing_steps(pilot: Pilot) -> None:
    await settle(pilot)
    pilot.app.health_tick()  # the next round, at once instead of in five seconds
    await settle(pilot)


async def certificates_steps(pilot: Pilot) -> None:
    await settle(pilot)
    await pilot.press("c")
    await settle(pilot)


async def teardown_steps(pilot: Pilot) -> None:
    await settle(pilot)
    await pilot.press("d")
    await settle(pilot)


def node_log_lines(stream: str, node: str) -> list[str]:
    """A node's lines of a stream, formatted as the engine writes logs/<node>.log (RunContext.log)."""
    return [
        f"{time.strftime('%H:%M:%S', time.localtime(e.at))} [{e.stage}] {'$ ' if e.stream == 'cmd' else ''}{line}"
        for e in load_stream(stream)
        if isinstance(e, LogLines) and e.node == node
        for line in e.lines
    ]


def with_node_log(workdir: Path) -> KhwApp:
    """The healthy cluster, with controller-1's full log file from the failed etcd stream."""
    logs = workdir / "state" / "logs"
    logs.mkdir(parents=True)
    (logs / "controller-1.log").write_text("".join(f"{line}\n" for line in node_log_lines("gcp_etcd_failed", "controller-1")))
    clock = FrozenClock(HEALTHY_AT + 2)
    return gcp_app(FakeEngine([]), clock, workdir=workdir, rounds=[health_round()], initial=build_events(), state_dir=workdir / "state")


async def node_log_steps(pilot: Pilot) -> None:
    await settle(pilot)
    pilot.app.node_tree.focus()
    pilot.app.node_tree.cursor_line = 2  # controller-1
    await pilot.press("n")
    await settle(pilot)


# --- a stage explained -----------------------------------------------------------------------


def explanations(workdir: Path, topo: Topology, pki: Pki) -> Callable[[str], str]:
    """`khwtui explain STAGE` of the scenes' gcp cluster: the real walkthrough over the aged
    certificates and a fixed encryption key (never shown), with the addresses the topology knows."""
    from khwtui.artifacts.nodefiles import Artifacts
    from khwtui.learn.commands import cluster_walkthrough
    from khwtui.learn.markdown import stage_text
    from khwtui.model.cluster import Cluster
    from khwtui.model.state import NodeRecord, State, StateDir

    nodes = {n.name: NodeRecord(n.name, n.role, n.internal_ip, n.external_ip or "") for n in topo.nodes}
    cluster = Cluster(topo.config, StateDir(workdir / "state"), State(nodes=nodes, public_address=topo.api_address or ""))
    artifacts = Artifacts(topo, pki, bytes(32))

    def explain(stage: str) -> str:
        w = cluster_walkthrough(cluster, artifacts)
        names = [e.stage.name for e in w.stages]
        return stage_text(w.stage(stage), names.index(stage) + 1, markdown=False)

    return explain


def explained(workdir: Path) -> KhwApp:
    """The healthy cluster, with its explanations."""
    config = gcp_config()
    topo = gcp_topology(config)
    pki = aged_pki(workdir / "pki", topo)
    app = make_app(config, topo, FakeEngine([]), clock=FrozenClock(HEALTHY_AT + 2), state_dir=STATE_DIR, initial=build_events(),
                   services=Services(health=FakeHealth([health_round()]), certs=lambda: cert_rows(pki, topo),
                                     teardown=FakeTeardown(), cost_per_hour=lambda: COST, explain=explanations(workdir, topo, pki)))
    return still(app)


def explain_steps(stage: str) -> Callable[[Pilot], Awaitable[None]]:
    """The stage list's cursor on `stage`, then `e`, until its explanation is read."""
    async def steps(pilot: Pilot) -> None:
        app = pilot.app
        await settle(pilot)
        app.stage_list.focus()
        app.stage_list.move_cursor(row=list(app.progress.stages).index(stage))
        await pilot.press("e")
        await pilot.pause()
        await app.workers.wait_for_complete([w for w in app.workers if w.group == "explain"])
        await settle(pilot)
        app.screen.query_one(TextArea).cursor_blink = False
        await pilot.pause()

    return steps


async def small_with_health_steps(pilot: Pilot) -> None:
    await settle(pilot)
    await pilot.press("h")  # at 80 columns the panel folds under the log, shown on demand
    await settle(pilot)


SCENES = [
    Scene("build-in-progress", WIDE, build_in_progress, build_in_progress_steps),
    Scene("failed-stage", WIDE, failed_stage, failed_stage_steps),
    Scene("healthy", WIDE, healthy, healthy_steps),
    Scene("probe-failing", WIDE, probe_failing, probe_failing_steps),
    Scene("certificates", WIDE, healthy, certificates_steps),
    Scene("teardown", WIDE, healthy, teardown_steps),
    Scene("node-log", WIDE, with_node_log, node_log_steps),
    Scene("healthy-80x24", SMALL, healthy, small_with_health_steps),
    Scene("failed-stage-80x24", SMALL, failed_stage, failed_stage_steps),
    Scene("explain-compute", WIDE, explained, explain_steps("compute")),
    Scene("explain-etcd", WIDE, explained, explain_steps("etcd")),
    Scene("explain-compute-80x24", SMALL, explained, explain_steps("compute")),
    Scene("explain-etcd-80x24", SMALL, explained, explain_steps("etcd")),
]
