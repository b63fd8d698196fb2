"""pki: the CA and every certificate, made once and re-issued only on mismatch or renewal.

Key generation and certificate parsing run in a thread: on the event loop they would freeze the
TUI for seconds (RSA keys)."""

from __future__ import annotations

import asyncio

from khwtui.artifacts.pki import Pki
from khwtui.core.outcome import Outcome
from khwtui.stages.base import Stage
from khwtui.toolkit.run_context import RunContext


class PkiStage(Stage):

    def _pki(self, run: RunContext) -> Pki:
        return Pki(run.cluster.state_dir.pki_dir, run.config)

    async def check(self, run: RunContext) -> list[Outcome]:
        outcomes = []
        for row in await asyncio.to_thread(self._pki(run).rows, run.topo):
            if row.status == "ok":
                outcomes.append(Outcome.passed(f"certificate {row.name}", evidence=f"{row.days_left} days left"))
            else:
                outcomes.append(Outcome.failed(f"certificate {row.name}", evidence=row.status))
        return outcomes

    async def apply(self, run: RunContext) -> None:
        changes = await asyncio.to_thread(self._pki(run).ensure, run.topo)
        for name, change in changes.items():
            if change != "kept":
                run.log("", f"certificate {name}: {change}")
        run.forget_artifacts()

    async def probe(self, run: RunContext) -> list[Outcome]:
        """Days left on the certificate that expires first."""
        rows = [r for r in await asyncio.to_thread(self._pki(run).rows, run.topo) if r.status != "missing"]
        if not rows:
            return [Outcome.unverified("certificates", reason="no certificates yet")]
        soonest = min(rows, key=lambda r: r.days_left if r.days_left is not None else 0)
        result = Outcome.passed if soonest.status == "ok" else Outcome.failed
        return [result("certificates", evidence=f"{soonest.days_left} days left ({soonest.name})")]


STAGE = PkiStage
