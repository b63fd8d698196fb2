"""control-plane: kube-apiserver, kube-controller-manager and kube-scheduler on every controller
(KTHW Lab 08).

Each controller gets the verified release binaries, its credentials (apiserver certificates,
encryption config, controller kubeconfigs) and the units; a unit restarts only when one of the
files it reads changed. Health is /livez and /readyz of each apiserver, fetched on the node with
curl and the cluster CA (installed from the node's apt sources when missing), polled until all
three units stay up with a healthy apiserver, never a fixed sleep.
"""

from __future__ import annotations

import shlex

from khwtui.artifacts.controlplane_files import (
    BIN_DIR,
    BINARIES,
    CA_FILE,
    CONFIG_DIR,
    UNITS,
    control_plane_files,
    unit_inputs,
)
from khwtui.artifacts.nodefiles import KUBERNETES_DIR
from khwtui.core.errors import StageFailed
from khwtui.core.outcome import Outcome
from khwtui.core.waiting import poll
from khwtui.model.config import Config
from khwtui.model.topology import Node
from khwtui.stages.base import Stage
from khwtui.toolkit.apt import LOCK_WAIT, install_missing
from khwtui.toolkit.release_install import CURL, ReleaseSpec, StageReleases
from khwtui.toolkit.run_context import RunContext

HEALTH_PATHS = ("livez", "readyz")
START_TIMEOUT = 180
CRASH_LOOP = 3  # restarts of one unit while waiting: it is refusing to start, stop waiting


def health_command(port: int) -> str:
    """One curl for /livez and /readyz of the node's own apiserver: prints one HTTP status per line
    (000 when nothing answers). TLS is verified against the cluster CA; no credentials are sent."""
    args = [CURL, "--silent", "--show-error", "--max-time", "5", "--cacert", CA_FILE, "--write-out", "%{http_code}\\n"]
    for path in HEALTH_PATHS:
        args += ["--output", "/dev/null", f"https://127.0.0.1:{port}/{path}"]
    return shlex.join(args)


def health_codes(stdout: str) -> dict[str, str]:
    """{"livez": "200", "readyz": "500"} from health_command's output; a missing line counts as 000."""
    codes = stdout.split()
    return {path: codes[i] if i < len(codes) else "000" for i, path in enumerate(HEALTH_PATHS)}


def unit_states(stdout: str) -> dict[str, tuple[str, str]]:
    """unit -> (ActiveState, NRestarts) from `systemctl show -p Id,ActiveState,NRestarts <units>`."""
    states = {}
    for block in stdout.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[fields.get("Id", "").removesuffix(".service")] = (fields.get("ActiveState", ""), fields.get("NRestarts", ""))
    return states


def control_plane_release(config: Config) -> list[ReleaseSpec]:
    """The four kube-* binaries, each its own release file."""
    version = config.cluster.kubernetes_version
    return [ReleaseSpec("kubernetes", version, ((name, f"{BIN_DIR}/{name}"),), name=name, archive=False) for name in BINARIES]


class ControlPlaneStage(Stage):
    def __init__(self) -> None:
        self.releases = StageReleases(control_plane_release)

    # --- check ------------------------------------------------------------------------------

    async def check(self, run: RunContext) -> list[Outcome]:
        outcomes = await run.each(run.topo.controllers, lambda node: self._check_node(run, node))
        return [o for per_node in outcomes for o in per_node]

    async def _check_node(self, run: RunContext, node: Node) -> list[Outcome]:
        drift = await self.releases.drifted(run, node.name) + [f.path for f in await run.drifted(node.name, control_plane_files(run.artifacts, node))]
        files = (Outcome.failed("control-plane files", node.name, "differ: " + ", ".join(drift)) if drift
                 else Outcome.passed("control-plane files", node.name, "binaries, credentials, units and config in place"))
        command = shlex.join(["systemctl", "is-active", *UNITS])
        active = await run.sh(node.name, command, check=False, timeout=30)
        states = ", ".join(f"{unit} {state}" for unit, state in zip(UNITS, active.stdout.split(), strict=False))
        units = (Outcome.passed("control-plane units active", node.name, states) if active.exit_status == 0
                 else Outcome.failed("control-plane units active", node.name, f"$ {command}\n{active.stdout}{active.stderr}"))
        return [files, units, await self._health_outcome(run, node)]

    async def _health_outcome(self, run: RunContext, node: Node) -> Outcome:
        command = health_command(run.config.network.api_port)
        result = await run.sh(node.name, command, check=False, timeout=30)
        codes = health_codes(result.stdout)
        summary = ", ".join(f"/{path} {code}" for path, code in codes.items())
        if all(code == "200" for code in codes.values()):
            return Outcome.passed("apiserver /livez and /readyz", node.name, summary)
        return Outcome.failed("apiserver /livez and /readyz", node.name, f"$ {command}\n{result.stdout}{result.stderr}{summary}")

    # --- apply ------------------------------------------------------------------------------

    async def apply(self, run: RunContext) -> None:
        await run.each(run.topo.controllers, lambda node: self._install(run, node))
        await run.each(run.topo.controllers, lambda node: self._wait_healthy(run, node))

    async def _install(self, run: RunContext, node: Node) -> None:
        await run.sh(node.name, install_missing(("curl",)), timeout=LOCK_WAIT + 600)
        await run.sh(node.name, f"install -d -m 0700 {KUBERNETES_DIR} && install -d -m 0755 {CONFIG_DIR}")
        files = control_plane_files(run.artifacts, node)
        restarts = {unit: unit_inputs(unit, files) | {f"{BIN_DIR}/{unit}"} for unit in UNITS}
        await self.releases.install(run, node.name, restarts=restarts)
        await run.place(node.name, files, restarts=restarts)
        await run.sh(node.name, shlex.join(["systemctl", "enable", *UNITS]))
        await run.start_units(node.name, UNITS)

    async def _wait_healthy(self, run: RunContext, node: Node) -> None:
        """Until the apiserver answers 200 on /livez and /readyz and all three units are active with
        the same restart count on two polls in a row (a unit that refuses its flags restarts)."""
        states_command = shlex.join(["systemctl", "show", "--property=Id,ActiveState,NRestarts", *UNITS])
        health = health_command(run.config.network.api_port)
        last: dict[str, tuple[str, str]] = {}  # unit states of the latest poll, for the failure report
        codes: dict[str, str] = {}
        healthy: dict[str, tuple[str, str]] | None = None  # unit states of the previous poll, if it was healthy
        first: dict[str, int] = {}  # restart counts at the first poll

        async def stable() -> bool | None:
            nonlocal last, codes, healthy
            codes = health_codes((await run.sh(node.name, health, check=False, timeout=30)).stdout)
            last = unit_states((await run.sh(node.name, states_command, check=False, timeout=30)).stdout)
            restarts = {u: int(last.get(u, ("", ""))[1] or 0) for u in UNITS}
            first.update({u: n for u, n in restarts.items() if u not in first})
            looping = [u for u in UNITS if restarts[u] - first[u] >= CRASH_LOOP]
            if looping:
                raise StageFailed(
                    f"{', '.join(looping)} on {node.name} keeps restarting ({CRASH_LOOP} restarts while waiting): it refuses to start",
                    node.name,
                    await self._journal(run, node, dict.fromkeys(looping, ("failed", ""))),
                )
            up = all(code == "200" for code in codes.values()) and all(last.get(u, ("",))[0] == "active" for u in UNITS)
            settled, healthy = up and last == healthy, (last if up else None)
            return True if settled else None

        try:
            await poll(stable, timeout=START_TIMEOUT, interval=1.0, what=f"the control plane on {node.name} to be healthy")
        except TimeoutError as exc:
            seen = [f"/{path} {code}" for path, code in codes.items()] + [f"{u} {last.get(u, ('unknown',))[0]}" for u in UNITS]
            raise StageFailed(f"{exc} (last: {', '.join(seen)})", node.name, await self._journal(run, node, last)) from None

    async def _journal(self, run: RunContext, node: Node, states: dict[str, tuple[str, str]]) -> tuple[str, ...]:
        """The last journal lines of the units that are not up (all three when none is known)."""
        down = [u for u in UNITS if states.get(u, ("",))[0] != "active"] or list(UNITS)
        units = [arg for u in down for arg in ("-u", u)]
        journal = await run.sh(node.name, shlex.join(["journalctl", *units, "-n", "20", "--no-pager"]), check=False)
        return tuple(journal.stdout.splitlines()[-10:])

    # --- probe ------------------------------------------------------------------------------

    async def probe(self, run: RunContext) -> list[Outcome]:
        return await run.each(run.topo.controllers, lambda node: self._health_outcome(run, node))


STAGE = ControlPlaneStage
