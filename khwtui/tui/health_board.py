"""Live health as the screen shows it: the latest result of every probe on every node.

A probe round replaces the previous one as a whole, so a stage's and a node's "failing" mark
holds exactly while the latest round says so, and a probe that is no longer run (its stage was
torn down) disappears. Single `HealthChanged` events (from a replayed stream) update one entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from khwtui.core.events import FAILED, PASSED, HealthChanged, Status
from khwtui.core.outcome import worst

Key = tuple[str, str]  # (probe, node)


def stage_of(probe: str) -> str:
    """"etcd:etcd" -> "etcd"; a probe that could not run at all is named after its stage."""
    return probe.split(":", 1)[0]


def check_of(probe: str) -> str:
    return probe.split(":", 1)[1] if ":" in probe else "probe"


@dataclass(frozen=True)
class ProbeSummary:
    """One probe over every node it ran on, as one row of the health panel."""

    probe: str
    results: tuple[HealthChanged, ...]

    @property
    def stage(self) -> str:
        return stage_of(self.probe)

    @property
    def check(self) -> str:
        return check_of(self.probe)

    @property
    def status(self) -> Status:
        return worst(r.result for r in self.results)

    @property
    def passing(self) -> int:
        return sum(1 for r in self.results if r.result == PASSED)

    @property
    def per_node(self) -> bool:
        return any(r.node for r in self.results)

    @property
    def latency_ms(self) -> float | None:
        known = [r.latency_ms for r in self.results if r.latency_ms is not None]
        return max(known) if known else None

    @property
    def at(self) -> float:
        return max(r.at for r in self.results)

    @property
    def problems(self) -> tuple[HealthChanged, ...]:
        return tuple(r for r in self.results if r.result != PASSED)


def describe(result: HealthChanged) -> str:
    """"controller-1: etcd — connection refused": where, which check, and why."""
    where = f"{result.node}: " if result.node else ""
    return f"{where}{check_of(result.probe)}" + (f" — {result.detail}" if result.detail else "")


class HealthBoard:
    def __init__(self) -> None:
        self._latest: dict[Key, HealthChanged] = {}
        self.rounds = 0  # probe rounds applied
        self.last_round: float | None = None  # when the latest round's results were taken (None: it had none)

    def replace(self, events: Iterable[HealthChanged]) -> tuple[set[str], set[str]]:
        """Apply a whole round; returns the stages and nodes whose marks may have changed."""
        before = list(self._latest.values())
        self._latest = {(e.probe, e.node): e for e in events}
        self.rounds += 1
        self.last_round = max((e.at for e in self._latest.values()), default=None)
        return _touched([*before, *self._latest.values()])

    def update(self, event: HealthChanged) -> tuple[set[str], set[str]]:
        self._latest[(event.probe, event.node)] = event
        self.last_round = max(event.at, self.last_round or event.at)
        return _touched([event])

    def clear(self) -> tuple[set[str], set[str]]:
        return self.replace(())

    @property
    def empty(self) -> bool:
        return not self._latest

    def summaries(self) -> list[ProbeSummary]:
        """One per probe, in the order the probes first appear (the stage order of a round)."""
        grouped: dict[str, list[HealthChanged]] = {}
        for event in self._latest.values():
            grouped.setdefault(event.probe, []).append(event)
        return [ProbeSummary(probe, tuple(results)) for probe, results in grouped.items()]

    def failing(self) -> list[HealthChanged]:
        return [e for e in self._latest.values() if e.result == FAILED]

    def stage_problem(self, stage: str) -> str:
        """The first failing probe of `stage`, described; "" while it is healthy."""
        return next((describe(e) for e in self.failing() if stage_of(e.probe) == stage), "")

    def node_problem(self, node: str) -> str:
        """The first failing probe on `node` ("etcd" ...); "" while it is healthy."""
        return next((check_of(e.probe) for e in self.failing() if e.node == node), "")


def _touched(events: Iterable[HealthChanged]) -> tuple[set[str], set[str]]:
    events = list(events)
    return {stage_of(e.probe) for e in events}, {e.node for e in events if e.node}
