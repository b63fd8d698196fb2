"""Live health: one round of every done stage's cheap probe, each result with its latency.

The TUI runs rounds on an interval; `khwtui status` runs one. A round never overlaps another
(the caller awaits it). Each stage's probe costs a fixed number of commands per node (at most
one per stage on each node it concerns) or a few API requests, whatever the cluster size, so a
round costs the same per node on 3 nodes or 300.

Latency: a probe that works node by node (through `run.each`) gets each node's own time; a
cluster-wide probe (an API request, a NodePort) gets the time of the whole stage's probe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import cast

from khwtui.core.events import (
    FAILED,
    PASSED,
    RUNNING,
    UNVERIFIED,
    Event,
    HealthChanged,
    NodeChanged,
    RunFinished,
    Sink,
)
from khwtui.core.outcome import exit_code_for, worst
from khwtui.engine.restarts import due as restarts_due
from khwtui.engine.restarts import with_due_restarts
from khwtui.model.cluster import Cluster
from khwtui.providers.base import Priced
from khwtui.stages import STAGES, stage_class
from khwtui.stages.base import Stage
from khwtui.toolkit.run_context import STAGE_AT_WORK, RunContext

DONE = (PASSED, UNVERIFIED)


class NodeTimer:
    """Times each node's part of a probe from the node transitions `run.each` emits, and keeps
    those transitions out of the event stream: a health round must not repaint the build's node tree."""

    def __init__(self, forward: Sink, clock: Callable[[], float]) -> None:
        self.forward, self.clock = forward, clock
        self.started: dict[str, float] = {}
        self.took: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        if not isinstance(event, NodeChanged):
            self.forward(event)
        elif event.status == RUNNING:
            self.started[event.node] = self.clock()
        elif event.node in self.started:
            self.took[event.node] = self.clock() - self.started.pop(event.node)


async def probe_round(run: RunContext, clock: Callable[[], float] = time.monotonic) -> list[HealthChanged]:
    """Probe every stage that is done; each outcome becomes a HealthChanged event (also emitted)."""
    due = [(info.name, cls()) for info in STAGES if run.state.stage(info.name).status in DONE and (cls := stage_class(info.name))]
    if due:
        run.remote  # noqa: B018 - made here, so the probes' copy of the context shares (and never leaks) it
    # a stage a run died in is not probed, but the restarts it made due are still shown failed
    due += [(info.name, Stage()) for info in STAGES if run.state.stage(info.name).status not in DONE and restarts_due(run.state, info.name)]
    # side by side: a round takes its slowest probe's time, not their sum
    events = [e for found in await asyncio.gather(*(probe_stage(run, name, stage, clock) for name, stage in due)) for e in found]
    for event in events:
        run.emit(event)
    return events


async def probe_stage(run: RunContext, name: str, stage: Stage, clock: Callable[[], float] = time.monotonic) -> list[HealthChanged]:
    """One stage's probe as HealthChanged events named "<stage>:<check>"; a probe that raises is a failed probe."""
    at_work = STAGE_AT_WORK.set(name)  # the shared SSH runner's lines, while this probe runs, carry its stage
    try:
        return await _probed(run, name, stage, clock)
    finally:
        STAGE_AT_WORK.reset(at_work)


async def _probed(run: RunContext, name: str, stage: Stage, clock: Callable[[], float]) -> list[HealthChanged]:
    timer = NodeTimer(run.emit, clock)
    probing = dataclasses.replace(run, emit=timer, stage=name)
    started = clock()
    try:
        outcomes = with_due_restarts(await stage.probe(probing), run.state, name)
    except Exception as exc:  # noqa: BLE001 - a probe that cannot run is a failed probe
        detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        return [HealthChanged(name, FAILED, getattr(exc, "host", ""), _ms(clock() - started), detail, run.clock())]
    whole = clock() - started
    return [
        HealthChanged(f"{name}:{o.check}", o.result, o.node, _ms(timer.took.get(o.node, whole)),
                      o.evidence.strip().splitlines()[-1] if o.evidence.strip() else "", run.clock())
        for o in outcomes
    ]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def exit_code(events: list[HealthChanged]) -> int:
    """docs/ARCHITECTURE.md "Command line and exit codes": 0 healthy, 1 something failed, 3 something could not be verified."""
    return exit_code_for(worst(e.result for e in events))


async def probe_once(cluster: Cluster, sink: Sink) -> int:
    """`khwtui status`: one round, then the exit code. Only the results reach `sink`; the commands
    the probes ran still go to each node's log file."""
    def results_only(event: Event) -> None:
        if isinstance(event, (HealthChanged, RunFinished)):
            sink(event)

    run = RunContext.of(cluster, results_only)
    try:
        events = await probe_round(run)
        if run.config.provider.kind == "gcp" and (cost := cast(Priced, run.provider).running_cost()) is not None:
            sink(HealthChanged("cost", PASSED, detail=f"${cost:.3f}/h", at=time.time()))
    finally:
        await run.close()
    code = exit_code(events)
    failed = sum(e.result == FAILED for e in events)
    unverified = sum(e.result == UNVERIFIED for e in events)
    sink(RunFinished(code, f"{len(events)} probes, {failed} failed, {unverified} unverified", time.time()))
    return code
