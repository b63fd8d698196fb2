"""Live health: one round of every done stage's cheap probe, with latencies, as events.

The TUI runs rounds on an interval; `khwtui status` runs one. A round never overlaps another
(the caller awaits it), and each stage's probe sends a fixed, small number of commands per node.
"""

from __future__ import annotations

import time
from typing import Callable

from khwtui.context import Cluster
from khwtui.errors import EXIT_FAILED, EXIT_OK, EXIT_UNVERIFIED
from khwtui.events import FAILED, UNVERIFIED, HealthChanged, RunFinished, Sink
from khwtui.runctx import RunContext
from khwtui.stages import STAGES, stage_class

DONE = ("passed", "unverified")


async def probe_round(run: RunContext, clock: Callable[[], float] = time.monotonic) -> list[HealthChanged]:
    """Probe every stage that is done; each outcome becomes a HealthChanged event."""
    events: list[HealthChanged] = []
    for info in STAGES:
        cls = stage_class(info.name)
        if cls is None or run.state.stage(info.name).status not in DONE:
            continue
        run.stage = info.name
        started = clock()
        try:
            outcomes = await cls().probe(run)
        except Exception as exc:  # noqa: BLE001 - a probe that cannot run is a failed probe
            outcomes = []
            events.append(HealthChanged(info.name, FAILED, getattr(exc, "host", ""), None, f"{type(exc).__name__}: {exc}", run.clock()))
        latency = (clock() - started) * 1000
        for o in outcomes:
            events.append(HealthChanged(f"{info.name}:{o.check}", o.result, o.node, latency, o.evidence.splitlines()[-1] if o.evidence else "", run.clock()))
    for event in events:
        run.emit(event)
    return events


def exit_code(events: list[HealthChanged]) -> int:
    results = {e.result for e in events}
    if FAILED in results:
        return EXIT_FAILED
    if UNVERIFIED in results:
        return EXIT_UNVERIFIED
    return EXIT_OK


async def probe_once(cluster: Cluster, sink: Sink) -> int:
    """`khwtui status`: one round, then the exit code of DESIGN.md (0 healthy, 1 failed, 3 unverified)."""
    from khwtui.providers.factory import make_provider
    from khwtui.remote_factory import make_remote

    run = RunContext(cluster, sink, make_provider(cluster), lambda log: make_remote(cluster, log))
    try:
        events = await probe_round(run)
    finally:
        await run.close()
    code = exit_code(events)
    sink(RunFinished(code, f"{len(events)} probes", time.time()))
    return code
