"""Runs the stage graph: check before apply, state saved at every transition, events to a sink.

Both front ends drive this one class. A run holds the cluster's lock, resumes from whatever
state.toml says (there is no --resume: every run checks first), and can be cancelled at any
point; the interrupted stage goes back to pending so the next run simply checks it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from khwtui.core.errors import EXIT_INTERRUPTED, KhwError, StateError, UsageError, UserError
from khwtui.core.events import FAILED, PASSED, PENDING, RUNNING, UNVERIFIED, CheckResult, Event, NodeChanged, RunFinished, Sink, StageChanged, Status
from khwtui.core.outcome import Outcome, exit_code_for, first_problem, verdict, worst
from khwtui.engine.restarts import due as restarts_due
from khwtui.engine.restarts import with_due_restarts
from khwtui.model.cluster import Cluster
from khwtui.model.state import CheckRecord
from khwtui.providers.base import Provider
from khwtui.stages import STAGES, StageInfo, stage_class
from khwtui.stages.base import Stage
from khwtui.toolkit.run_context import RemoteFactory, RunContext

DONE = (PASSED, UNVERIFIED)


@dataclass(frozen=True)
class Selection:
    only: tuple[str, ...] = ()
    start: str | None = None
    until: str | None = None


def select(selection: Selection, names: list[str]) -> list[str]:
    """The stages a slice names, in table order; an unknown name is a usage error."""
    for name in (*selection.only, selection.start, selection.until):
        if name is not None and name not in names:
            raise UsageError(f"unknown stage {name!r}; stages: {', '.join(names)}")
    if selection.only:
        return [n for n in names if n in selection.only]
    first = names.index(selection.start) if selection.start else 0
    last = names.index(selection.until) if selection.until else len(names) - 1
    return names[first : last + 1]


class Engine:
    """One build or check run over a cluster. `run` returns the exit code (docs/ARCHITECTURE.md
    "Command line and exit codes")."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        provider_factory: Callable[[Cluster], Provider] | None = None,
        remote_factory: RemoteFactory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.clock = clock
        self._provider_factory = provider_factory
        self._remote_factory = remote_factory
        self._task: asyncio.Task | None = None
        self.stages: list[StageInfo] = [s for s in STAGES if s.name != "demo" or cluster.config.demo.enabled]

    # --- public ---------------------------------------------------------------------------

    async def run(self, sink: Sink, *, only: list[str] | None = None, start: str | None = None, until: str | None = None) -> int:
        names = select(Selection(tuple(only or ()), start, until), [s.name for s in STAGES])
        if not only:
            names = [n for n in names if n in {s.name for s in self.stages}]
        self._task = asyncio.current_task()
        with self.cluster.state_dir.lock():
            self.cluster.state_dir.ensure_layout()
            self.cluster.state = self.cluster.state_dir.load()
            self._stamp_state()
            self._require_inputs(names)
            run = self._context(sink)
            try:
                return await self._run_stages(run, names)
            except asyncio.CancelledError:
                self._interrupt(run)
                sink(RunFinished(EXIT_INTERRUPTED, "interrupted; run again to resume", self.clock()))
                return EXIT_INTERRUPTED
            except KhwError as exc:  # bad config, credentials or state: exit 2 with its one-line fix
                self._interrupt(run, str(exc).splitlines()[0])
                sink(RunFinished(exc.exit_code, str(exc), self.clock()))
                raise
            finally:
                await run.close()

    def saved_events(self) -> list[Event]:
        """The saved state as events, so a front end shows a half-built cluster before any run."""
        state, at = self.cluster.state, 0.0
        events: list[Event] = []
        for info in self.stages:
            record = state.stages.get(info.name)
            if record is not None and record.status != PENDING:
                events.append(StageChanged(info.name, record.status, record.detail, record.finished or record.started or at))
                events += [CheckResult(info.name, c.check, c.result, c.node, c.evidence, record.finished or at) for c in record.checks]
        for name, node in state.nodes.items():
            events.append(NodeChanged(name, PASSED if node.host_key else PENDING, "compute", "", node.internal_ip, at))
        return events

    def cancel(self) -> None:
        """Stop cleanly: the running stage is interrupted and `run` returns 130."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def check(self, sink: Sink) -> int:
        """`status --deep`: every stage's full check, once, changing nothing."""
        with self.cluster.state_dir.lock():
            self.cluster.state = self.cluster.state_dir.load()
            run = self._context(sink)
            results: list[Status] = []
            try:
                for info in self.stages:
                    cls = stage_class(info.name)
                    done = cls is not None and self.cluster.state.stage(info.name).status in DONE
                    if not done and not restarts_due(self.cluster.state, info.name):
                        continue  # a stage a run died in is not checked, but its due restarts are shown
                    run.stage = info.name
                    outcomes = with_due_restarts(await cls().check(run) if done and cls else [], self.cluster.state, info.name)
                    self._emit_checks(run, outcomes)
                    results.append(verdict(outcomes))
            finally:
                await run.close()
            code = _exit_for_all(results)
            sink(RunFinished(code, "", self.clock()))
            return code

    # --- internals ------------------------------------------------------------------------

    def _context(self, sink: Sink) -> RunContext:
        from khwtui.providers.factory import make_provider
        from khwtui.transport.remote_factory import make_remote

        provider = (self._provider_factory or make_provider)(self.cluster)
        remote = self._remote_factory or (lambda on_line: make_remote(self.cluster, on_line))
        return RunContext(self.cluster, sink, provider, remote, self.clock)

    def _stamp_state(self) -> None:
        state, config = self.cluster.state, self.cluster.config
        if state.cluster and state.cluster != config.cluster.name:
            raise StateError(f"state folder {self.cluster.state_dir.path} belongs to cluster {state.cluster!r}, not {config.cluster.name!r}; use another --state-dir")
        state.cluster, state.provider = config.cluster.name, config.provider.kind

    async def _run_stages(self, run: RunContext, names: list[str]) -> int:
        results: dict[str, Status] = {}
        for name in names:
            status = await self._run_stage(run, name)
            results[name] = status
            if status == FAILED:
                break
        code = _exit_for_all(results.values())
        run.emit(RunFinished(code, _summary(results), self.clock()))
        return code

    def _require_inputs(self, names: list[str]) -> None:
        """A stage whose inputs are neither done nor part of this run stops the run (exit 2)."""
        state = self.cluster.state
        for i, name in enumerate(names):
            for need in STAGE_NEEDS.get(name, ()):
                if need not in names[:i] and state.stage(need).status not in DONE:
                    raise UsageError(f"stage {name} needs stage {need} first; run `khwtui up --until {need}` (or without a slice)")

    async def _run_stage(self, run: RunContext, name: str) -> Status:
        cls = await asyncio.to_thread(stage_class, name)  # a first import takes the loop for up to a second
        record = self.cluster.state.stage(name)
        run.stage = name
        record.status, record.detail, record.started, record.finished = RUNNING, "", self.clock(), None
        self._transition(run, name)
        if cls is None:
            outcomes = [Outcome.failed("implemented", "", f"stage {name} is not implemented in this khwtui version")]
        else:
            outcomes = await self._check_then_apply(run, cls())
        record.status, record.detail, record.finished = verdict(outcomes), first_problem(outcomes), self.clock()
        record.checks = [CheckRecord(o.check, o.result, o.node, o.evidence) for o in outcomes]
        self._emit_checks(run, outcomes)
        self._transition(run, name)
        return record.status

    async def _check_then_apply(self, run: RunContext, stage: Stage) -> list[Outcome]:
        try:
            outcomes = with_due_restarts(await stage.check(run), self.cluster.state, run.stage)
            if verdict(outcomes) == PASSED:
                run.log("", f"{run.stage}: every check passed, nothing to do")
                return outcomes
            await stage.apply(run)
            outcomes = await stage.check(run)
            if verdict(outcomes) != FAILED:
                run.settle_restarts()  # restarted and checked: no longer due
            return with_due_restarts(outcomes, self.cluster.state, run.stage)
        except Exception as exc:  # any failure inside a stage fails that stage, not the run...
            if isinstance(exc, UserError):
                raise  # ...except what no stage can fix (config, credentials, state): the run stops, exit 2
            run.log("", f"{run.stage} failed: {type(exc).__name__}: {exc}", "err")
            return [Outcome.failed("apply", getattr(exc, "host", ""), _evidence(exc))]

    def _transition(self, run: RunContext, name: str) -> None:
        record = self.cluster.state.stage(name)
        self.cluster.state_dir.save(self.cluster.state)
        run.emit(StageChanged(name, record.status, record.detail, self.clock()))

    def _emit_checks(self, run: RunContext, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            run.emit(CheckResult(run.stage, o.check, o.result, o.node, o.evidence, self.clock()))

    def _interrupt(self, run: RunContext, detail: str = "interrupted") -> None:
        if run.stage:
            record = self.cluster.state.stage(run.stage)
            if record.status == RUNNING:
                record.status, record.detail = PENDING, detail
                self._transition(run, run.stage)


STAGE_NEEDS: dict[str, tuple[str, ...]] = {s.name: s.needs for s in STAGES}


def _exit_for_all(statuses: Iterable[Status]) -> int:
    return exit_code_for(worst(statuses))


def _summary(results: dict[str, Status]) -> str:
    return ", ".join(f"{name} {status}" for name, status in results.items())


def _evidence(exc: Exception) -> str:
    """The error line plus, for a failed command, the node's last output lines."""
    tail = getattr(exc, "lines", None) or ()
    return "\n".join([str(exc), *tail])


def replay(events: list[Event]) -> dict[str, Status]:
    """The final stage table a stream of events describes (a `--json` stream replays to it)."""
    table: dict[str, Status] = {}
    for event in events:
        if isinstance(event, StageChanged):
            table[event.stage] = event.status
    return table
