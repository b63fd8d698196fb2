"""kubeconfigs: one per component and the admin ones, kept in the state folder's kubeconfigs/ (0600).

The stages that consume them (control-plane, workers, admin-access) place them on the nodes.
Rendering them (every certificate and key read and encoded) runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from khwtui.artifacts.kubeconfigs import kubeconfig, kubeconfig_specs
from khwtui.core.fsutil import write_if_changed
from khwtui.core.outcome import Outcome
from khwtui.stages.base import Stage
from khwtui.toolkit.run_context import RunContext

SECRET = 0o600


class KubeconfigsStage(Stage):

    def _wanted(self, run: RunContext) -> dict[Path, bytes]:
        folder = run.cluster.state_dir.kubeconfig_dir
        pki = run.artifacts.pki
        return {folder / f"{spec.name}.kubeconfig": kubeconfig(run.topo, pki, spec).encode() for spec in kubeconfig_specs(run.topo)}

    async def check(self, run: RunContext) -> list[Outcome]:
        outcomes = []
        for path, content in (await asyncio.to_thread(self._wanted, run)).items():
            ok = path.is_file() and path.read_bytes() == content and path.stat().st_mode & 0o777 == SECRET
            make = Outcome.passed if ok else Outcome.failed
            outcomes.append(make(f"kubeconfig {path.stem}", evidence="" if ok else f"{path} missing or out of date"))
        if run.topo.api_url is None:
            outcomes.append(Outcome.unverified("endpoint kubeconfigs", reason="the API endpoint address is not known yet"))
        return outcomes

    async def apply(self, run: RunContext) -> None:
        for name in await asyncio.to_thread(self._write, run):
            run.log("", f"wrote {name}")

    def _write(self, run: RunContext) -> list[str]:
        """The names of the kubeconfigs that were missing or differed, now written."""
        return [path.name for path, content in self._wanted(run).items() if write_if_changed(path, content, SECRET)]


STAGE = KubeconfigsStage
