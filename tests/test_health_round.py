"""A health round without nodes: what it costs per node, what it emits, and the exit codes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from stagerun import ScriptedRemote, local_raw, stage_context

import khwtui.engine.health
from khwtui.core.events import HealthChanged, LogLines, NodeChanged
from khwtui.core.outcome import Outcome
from khwtui.engine.health import exit_code, probe_round, probe_stage
from khwtui.stages.base import Stage
from khwtui.transport.remote import RunResult

NODE_PROBES = ("compute", "etcd", "control-plane", "workers")  # the stages whose probes run commands on nodes


@pytest.mark.parametrize("controllers,workers", [(1, 1), (3, 2), (7, 12)])
async def test_a_round_sends_the_same_few_commands_per_node_whatever_the_cluster_size(tmp_path: Path, controllers: int, workers: int) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(controllers=controllers, workers=workers), remote=remote, done=NODE_PROBES)
    events = await probe_round(run)
    per_node = remote.per_node()
    assert {per_node[f"controller-{i}"] for i in range(controllers)} == {3}  # ssh, etcd health, apiserver health
    assert {per_node[f"worker-{i}"] for i in range(workers)} == {2}  # ssh, worker units
    assert per_node["lb"] == 1
    assert len(remote.sent) == 3 * controllers + 2 * workers + 1
    assert len([e for e in events if e.probe == "etcd:etcd"]) == controllers


async def test_a_round_emits_only_results_each_with_a_latency_and_keeps_node_transitions_out(tmp_path: Path) -> None:
    run, emitted = stage_context(tmp_path, local_raw(controllers=2, workers=1), done=("compute", "etcd"))
    events = await probe_round(run)
    assert emitted == events and all(isinstance(e, HealthChanged) for e in emitted)
    assert not [e for e in emitted if isinstance(e, (NodeChanged, LogLines))]
    assert sorted((e.probe, e.node) for e in events) == [
        ("compute:ssh and sudo", "controller-0"), ("compute:ssh and sudo", "controller-1"), ("compute:ssh and sudo", "lb"),
        ("compute:ssh and sudo", "worker-0"), ("etcd:etcd", "controller-0"), ("etcd:etcd", "controller-1")]
    assert all(e.latency_ms is not None and e.latency_ms >= 0 for e in events)


class TwoNodes(Stage):
    """A probe that works node by node through run.each, and reports one cluster-wide result too."""

    async def probe(self, run) -> list[Outcome]:
        per_node = await run.each(run.topo.controllers, self._one)
        return [*per_node, Outcome.unverified("cluster-wide", reason="no such resource")]

    async def _one(self, node) -> Outcome:
        return Outcome.passed("node", node.name, "ok")


async def test_each_node_gets_its_own_latency_and_a_cluster_wide_result_the_whole_probes(tmp_path: Path) -> None:
    run, _ = stage_context(tmp_path, local_raw(controllers=2, workers=1))
    ticks = itertools.count()
    events = await probe_stage(run, "two", TwoNodes(), clock=lambda: next(ticks))
    # clock reads: the probe starts at 0; controller-0 runs from 1 to 2, controller-1 from 3 to 4; the probe ends at 5
    assert [(e.probe, e.node, e.result, e.latency_ms) for e in events] == [
        ("two:node", "controller-0", "passed", 1000.0), ("two:node", "controller-1", "passed", 1000.0),
        ("two:cluster-wide", "", "unverified", 5000.0)]


class Broken(Stage):
    async def probe(self, run) -> list[Outcome]:
        raise ConnectionRefusedError(111, "Connection refused")


async def test_a_probe_that_cannot_run_is_a_failed_probe_with_the_reason(tmp_path: Path) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    ticks = itertools.count()
    (event,) = await probe_stage(run, "dns", Broken(), clock=lambda: next(ticks))
    assert (event.probe, event.result, event.latency_ms, event.detail) == ("dns", "failed", 1000.0, "ConnectionRefusedError: [Errno 111] Connection refused")


def test_exit_codes_are_0_healthy_1_failed_3_unverified() -> None:
    def round_of(*results: str) -> list[HealthChanged]:
        return [HealthChanged(f"p{i}", r, latency_ms=1.0) for i, r in enumerate(results)]

    assert exit_code(round_of("passed", "passed")) == 0
    assert exit_code(round_of("passed", "unverified")) == 3
    assert exit_code(round_of("unverified", "failed", "passed")) == 1
    assert exit_code([]) == 0


class Rendezvous(Stage):
    """A probe that runs a command on controller-0, then finishes only once every other such probe
    has started: probed one after another, a round of them never ends."""

    def __init__(self, arrived: dict[str, asyncio.Event]) -> None:
        self.arrived = arrived

    async def probe(self, run) -> list[Outcome]:
        await run.sh("controller-0", f"probe-of {run.stage}")
        self.arrived[run.stage].set()
        await asyncio.gather(*(event.wait() for event in self.arrived.values()))
        return [Outcome.passed("met", "controller-0")]


class LoggingRemote(ScriptedRemote):
    """Streams one line per command through the run's log, as the real SSH runner does."""

    log: Callable[[str, str, str], None] | None = None

    async def run(self, host, command: str, **kwargs) -> RunResult:
        assert self.log is not None
        self.log(host.name, command, "cmd")
        return await super().run(host, command, **kwargs)


async def test_a_round_probes_the_stages_side_by_side_and_logs_each_line_under_the_stage_that_sent_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round takes its slowest probe's time, not their sum (issue 20: status for 3+3 under a second)."""
    done = ("etcd", "control-plane", "workers")
    arrived = {name: asyncio.Event() for name in done}
    monkeypatch.setattr(khwtui.engine.health, "stage_class", lambda name: (lambda: Rendezvous(arrived)) if name in done else None)
    remote = LoggingRemote()
    run, emitted = stage_context(tmp_path, local_raw(controllers=1, workers=1), remote=remote, done=done)
    remote.log = run.log  # what the real runner is made with: the shared context's log
    events = await asyncio.wait_for(probe_round(run), timeout=60)  # one after another: never returns
    assert [(e.probe, e.result) for e in events] == [(f"{name}:met", "passed") for name in done]  # in stage order
    logged = [(e.stage, e.lines) for e in emitted if isinstance(e, LogLines)]
    assert sorted(logged) == sorted((name, (f"probe-of {name}",)) for name in done)
    assert "[control-plane] $ probe-of control-plane" in (run.cluster.state_dir.logs_dir / "controller-0.log").read_text()
