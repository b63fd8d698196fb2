"""What a check found: one Outcome per thing it looked at, and the verdict over many.

An outcome is passed, failed with the evidence (command and output), or unverified with the
reason. The engine turns a stage's outcomes into its status (never "passed" while any check is
unverified); health probes, day-2 operations and the add-ons report the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from khwtui.core.errors import EXIT_FAILED, EXIT_OK, EXIT_UNVERIFIED
from khwtui.core.events import FAILED, PASSED, UNVERIFIED, Status


@dataclass(frozen=True)
class Outcome:
    check: str
    result: Status  # passed | failed | unverified
    node: str = ""
    evidence: str = ""  # failed: command and output; unverified: the reason

    @classmethod
    def passed(cls, check: str, node: str = "", evidence: str = "") -> Outcome:
        return cls(check, PASSED, node, evidence)

    @classmethod
    def failed(cls, check: str, node: str = "", evidence: str = "") -> Outcome:
        return cls(check, FAILED, node, evidence)

    @classmethod
    def unverified(cls, check: str, node: str = "", reason: str = "") -> Outcome:
        return cls(check, UNVERIFIED, node, reason)

    @classmethod
    def judged(cls, check: str, ok: bool, evidence: str, node: str = "") -> Outcome:
        """Passed or failed as `ok` says, with the same evidence either way."""
        return cls(check, PASSED if ok else FAILED, node, evidence)


def worst(results: Iterable[Status]) -> Status:
    """failed if anything failed, else unverified if anything could not be verified, else passed."""
    seen = set(results)
    if FAILED in seen:
        return FAILED
    if UNVERIFIED in seen:
        return UNVERIFIED
    return PASSED


def verdict(outcomes: list[Outcome]) -> Status:
    return worst(o.result for o in outcomes)


def exit_code_for(result: Status) -> int:
    """The exit code for a result: 0 passed, 3 unverified, 1 failed (docs/ARCHITECTURE.md "Command line and exit codes")."""
    return {PASSED: EXIT_OK, UNVERIFIED: EXIT_UNVERIFIED}.get(result, EXIT_FAILED)


def first_problem(outcomes: list[Outcome]) -> str:
    """The one line shown on the stage's row: the first failure, else the first unverified reason."""
    for wanted in (FAILED, UNVERIFIED):
        for o in outcomes:
            if o.result == wanted:
                where = f"{o.node}: " if o.node else ""
                evidence = o.evidence.strip().splitlines()[-1] if o.evidence.strip() else ""
                return f"{where}{o.check}" + (f" — {evidence}" if evidence else "")
    return ""
