"""`--auto`: the engine without a UI. One line per stage and node transition (and per quarter of
each release file's transfer), a summary table,
the failing node's last output lines, and the exit codes of docs/ARCHITECTURE.md
"Command line and exit codes". `--json` prints the event
stream itself, one JSON object per line, and nothing else on stdout.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from khwtui.console.table import table
from khwtui.core.events import (
    FAILED,
    PASSED,
    PENDING,
    RUNNING,
    SKIPPED,
    UNVERIFIED,
    CheckResult,
    Event,
    HealthChanged,
    LogLines,
    NodeChanged,
    RunFinished,
    StageChanged,
    TransferProgress,
    to_json,
)
from khwtui.transport.transfers import Milestones, describe

MARKS = {PASSED: "✔", FAILED: "✖", RUNNING: "⟳", SKIPPED: "⊘", UNVERIFIED: "?", PENDING: "·"}
TAIL = 12  # output lines kept per node for the failure summary


class ConsoleSink:
    """Prints events as an operator reads them (or as JSON lines)."""

    def __init__(self, out: TextIO = sys.stdout, *, json: bool = False, verbose: bool = False) -> None:
        self.out, self.json, self.verbose = out, json, verbose
        self.tails: dict[str, collections.deque[str]] = collections.defaultdict(lambda: collections.deque(maxlen=TAIL))
        self.stages: dict[str, StageChanged] = {}
        self.checks: list[CheckResult] = []
        self.started: dict[str, float] = {}
        self.milestones = Milestones()

    def __call__(self, event: Event) -> None:
        if self.json:
            print(to_json(event), file=self.out, flush=True)
            return
        handler = getattr(self, f"_on_{event.kind}")
        handler(event)

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _on_stage(self, e: StageChanged) -> None:
        self.stages[e.stage] = e
        if e.status == RUNNING:
            self.started[e.stage] = e.at
            self._print(f"{MARKS[RUNNING]} {e.stage}")
            return
        took = e.at - self.started.get(e.stage, e.at)
        detail = f" — {e.detail}" if e.detail else ""
        self._print(f"{MARKS.get(e.status, '?')} {e.stage} {e.status} ({took:.1f} s){detail}")

    def _on_node(self, e: NodeChanged) -> None:
        detail = f" — {e.detail}" if e.detail else ""
        self._print(f"    {MARKS.get(e.status, '·')} {e.node} {e.stage} {e.status}{detail}")

    def _on_log(self, e: LogLines) -> None:
        self.tails[e.node].extend(e.lines)
        if self.verbose:
            for line in e.lines:
                self._print(f"      {e.node or 'khwtui'} | {line}")

    def _on_transfer(self, e: TransferProgress) -> None:
        """A line at the start, every quarter and the end of each file's transfer."""
        if self.milestones.reached(e):
            self._print(f"      {e.node} {describe(e)}")

    def _on_check(self, e: CheckResult) -> None:
        self.checks.append(e)

    def _on_health(self, e: HealthChanged) -> None:
        latency = f" {e.latency_ms:.0f} ms" if e.latency_ms is not None else ""
        self._print(f"{MARKS.get(e.result, '?')} {e.probe} {e.node}{latency} {e.detail}".rstrip())

    def _on_finished(self, e: RunFinished) -> None:
        if self.stages:
            rows = [(MARKS.get(s.status, "?"), name, s.status, s.detail) for name, s in self.stages.items()]
            self._print("")
            self._print(table(("", "stage", "status", "detail"), rows))
        self._print_failures()
        self._print_unverified()
        self._print(f"exit {e.exit_code}" + (f": {e.summary}" if e.summary and e.exit_code == 130 else ""))

    def _print_failures(self) -> None:
        for c in self.checks:
            if c.result != FAILED:
                continue
            self._print("")
            self._print(f"✖ {c.stage} · {c.check}" + (f" on {c.node}" if c.node else ""))
            for line in c.evidence.splitlines()[-TAIL:]:
                self._print(f"    {line}")
            if c.node and self.tails.get(c.node):
                self._print(f"  last output of {c.node}:")
                for line in self.tails[c.node]:
                    self._print(f"    {line}")

    def _print_unverified(self) -> None:
        unverified = [c for c in self.checks if c.result == UNVERIFIED]
        if unverified:
            self._print("")
            self._print("could not be verified here:")
            for c in unverified:
                where = f" on {c.node}" if c.node else ""
                self._print(f"  ? {c.stage} · {c.check}{where}: {c.evidence}")


def run_with_signals(work: Callable[[], Awaitable[int]], cancel: Callable[[], None]) -> int:
    """Run `work` with SIGINT and SIGTERM turned into a clean cancel (exit 130)."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, cancel)
        return await work()

    return asyncio.run(main())
