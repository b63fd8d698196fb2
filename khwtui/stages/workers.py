"""workers: OS packages, kernel settings, containerd, runc, CNI, kubelet and kube-proxy on every
worker (KTHW Lab 09).

Each worker's facts are read first (workers_files.NodeFacts) and decide the settings only some
hosts need. Files are placed only where they differ, and a unit restarts only when a file it
reads changed. Then the units must stay up (a kubelet that refuses its flags restarts: that fails
the stage at once, with the kubelet's own last lines), and each node must report Ready to the API
server, asked through the cluster's API endpoint as the admin user. Where the API server does not
serve nodes (its /api/v1 discovery lists none, as with the test stand-in), Ready is reported as
unverified with that reason, never as passed.
"""

from __future__ import annotations

import shlex

from khwtui.artifacts.kubeconfigs import spec_named
from khwtui.artifacts.workers_files import (
    CNI_FILES,
    CONTAINERD_FILES,
    CONTAINERD_SOCKET,
    CRICTL_FILES,
    FACTS_COMMAND,
    KUBERNETES_FILES,
    MODULES,
    OS_PACKAGES,
    RUNC_BINARY,
    SYSCTL_FILE,
    UNITS,
    NodeFacts,
    restart_inputs,
    worker_files,
)
from khwtui.core.errors import StageFailed
from khwtui.core.events import FAILED
from khwtui.core.outcome import Outcome
from khwtui.core.waiting import poll
from khwtui.model.config import Config
from khwtui.model.topology import Node
from khwtui.stages.base import Stage
from khwtui.toolkit.apt import LOCK_WAIT, install_missing
from khwtui.toolkit.release_install import ReleaseSpec, StageReleases
from khwtui.toolkit.run_context import RunContext
from khwtui.transport.kubeapi import ApiClient, ApiError, Credentials

START_TIMEOUT = 120
READY_TIMEOUT = 180
JOURNAL_LINES = 10
READY = "node Ready"
SYSCTLS = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables")
CTR = CONTAINERD_FILES["ctr"]


def packages_for(facts: NodeFacts) -> tuple[str, ...]:
    """KTHW's packages, and kmod where modules are loaded."""
    return OS_PACKAGES + (("kmod",) if facts.modules else ())


def kernel_command(facts: NodeFacts) -> str:
    """Swap off (the kubelet refuses swap) and, where there are modules, the modules loaded now."""
    swap_off = 'if [ "$(tail -n +2 /proc/swaps | wc -l)" -gt 0 ]; then swapoff -a; fi'
    return f"{swap_off}; modprobe -a {' '.join(MODULES)}" if facts.modules else swap_off


def status_command(packages: tuple[str, ...]) -> str:
    """One command printing key=value lines: packages, swap, sysctls, units, containerd's version."""
    names = " ".join(shlex.quote(p) for p in packages)
    return "; ".join([
        f"for p in {names}; do echo \"package.$p=$(dpkg-query -W -f='${{db:Status-Status}}' \"$p\" 2>/dev/null || echo missing)\"; done",
        'echo "swap=$(tail -n +2 /proc/swaps | wc -l)"',
        f'for k in {" ".join(SYSCTLS)}; do echo "sysctl.$k=$(sysctl -n "$k" 2>/dev/null || echo missing)"; done',
        f'for u in {" ".join(UNITS)}; do echo "unit.$u=$(systemctl is-active "$u")"; done',
        f"echo \"containerd=$({CTR} --address {CONTAINERD_SOCKET} version 2>/dev/null | awk '/^Server:/{{s=1}} s && /Version:/{{print $2; exit}}')\"",
    ])


def key_values(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def show_blocks(stdout: str) -> dict[str, dict[str, str]]:
    """unit -> its properties, from `systemctl show -p ... <units>` (one block per unit)."""
    units = {}
    for block in stdout.strip().split("\n\n"):
        fields = key_values(block)
        units[fields.get("Id", "").removesuffix(".service")] = fields
    return units


def admin_api(run: RunContext) -> ApiClient:
    """The API server through the cluster's API endpoint, as the admin user."""
    pki, cert = run.artifacts.pki, spec_named(run.topo, "admin").cert
    return ApiClient(Credentials(run.topo.api_url or "", pki.ca_pem(), pki.cert_pem(cert), pki.key_pem(cert)))


def ready_outcome(node: str, body: dict | str | None) -> Outcome:
    """passed when the Node object says Ready=True; failed with what it says otherwise."""
    if body is None:
        return Outcome.failed(READY, node, f"{node} has not registered with the API server")
    try:
        conditions = body["status"]["conditions"] if isinstance(body, dict) else []
        ready = next(c for c in conditions if c["type"] == "Ready")
    except (KeyError, TypeError, StopIteration):
        return Outcome.failed(READY, node, f"{node} reports no Ready condition yet")
    summary = f"Ready={ready.get('status')} ({ready.get('reason', '')}: {ready.get('message', '')})"
    return (Outcome.passed if ready.get("status") == "True" else Outcome.failed)(READY, node, summary)


def worker_release(config: Config) -> list[ReleaseSpec]:
    """containerd, the CNI plugins, runc, crictl (when its version is set), kubelet and kube-proxy."""
    versions = config.versions
    specs = [ReleaseSpec("containerd", versions.containerd, tuple(CONTAINERD_FILES.items())),
             ReleaseSpec("cni_plugins", versions.cni_plugins, tuple(CNI_FILES.items())),
             ReleaseSpec("runc", versions.runc, (("runc", RUNC_BINARY),), archive=False)]
    if versions.crictl:
        specs.append(ReleaseSpec("crictl", versions.crictl, tuple(CRICTL_FILES.items())))
    version = config.cluster.kubernetes_version
    return specs + [ReleaseSpec("kubernetes", version, ((name, path),), name=name, archive=False) for name, path in KUBERNETES_FILES.items()]


class WorkersStage(Stage):
    def __init__(self) -> None:
        self.releases = StageReleases(worker_release)

    async def _facts(self, run: RunContext, node: Node) -> NodeFacts:
        result = await run.sh(node.name, FACTS_COMMAND, timeout=60)
        try:
            return NodeFacts.parse(result.stdout)
        except ValueError as exc:
            raise StageFailed(str(exc), node.name) from None

    # --- check ------------------------------------------------------------------------------

    async def check(self, run: RunContext) -> list[Outcome]:
        outcomes = await run.each(run.topo.workers, lambda node: self._check_node(run, node))
        return [o for per_node in outcomes for o in per_node]

    async def _check_node(self, run: RunContext, node: Node) -> list[Outcome]:
        facts = await self._facts(run, node)
        drift = await self.releases.drifted(run, node.name) + [f.path for f in await run.drifted(node.name, worker_files(run.artifacts, node, facts))]
        files = (Outcome.failed("worker files", node.name, "differ: " + ", ".join(drift)) if drift
                 else Outcome.passed("worker files", node.name, f"binaries, credentials, configs and units in place; {facts.describe()}"))
        return [files, *await self._status_outcomes(run, node, facts), await self._ready(run, node)]

    async def _status_outcomes(self, run: RunContext, node: Node, facts: NodeFacts) -> list[Outcome]:
        command = status_command(packages_for(facts))
        result = await run.sh(node.name, command, check=False, timeout=60)
        seen = key_values(result.stdout)
        host = [f"{p} {seen.get(f'package.{p}', 'missing')}" for p in packages_for(facts) if seen.get(f"package.{p}") != "installed"]
        if seen.get("swap") != "0":
            host.append(f"{seen.get('swap', 'unknown')} swap areas in use")
        host += [f"{k} = {seen.get(f'sysctl.{k}', 'missing')}" for k in SYSCTLS if seen.get(f"sysctl.{k}") != "1"]
        units = [f"{u} {seen.get(f'unit.{u}', 'unknown')}" for u in UNITS]
        version = seen.get("containerd", "")
        evidence = f"$ {command}\n{result.stdout}{result.stderr}"
        return [
            Outcome.failed("packages, swap and sysctls", node.name, "; ".join(host) + "\n" + evidence) if host
            else Outcome.passed("packages, swap and sysctls", node.name, f"{', '.join(packages_for(facts))} installed; swap off; forwarding on"),
            Outcome.passed("worker units active", node.name, ", ".join(units)) if all(u.endswith(" active") for u in units)
            else Outcome.failed("worker units active", node.name, ", ".join(units) + "\n" + evidence),
            Outcome.passed("containerd answers", node.name, f"containerd {version}") if version
            else Outcome.failed("containerd answers", node.name, f"no server version from {CTR} version\n{evidence}"),
        ]

    async def _ready(self, run: RunContext, node: Node) -> Outcome:
        """Ready as the API server reports it; unverified when its discovery shows it has no nodes."""
        api = admin_api(run)
        try:
            reason = await api.unserved("v1", "nodes")
            if reason:
                return Outcome.unverified(READY, node.name, f"{reason}, so whether {node.name} is Ready cannot be read there")
            return ready_outcome(node.name, await api.get(f"/api/v1/nodes/{node.name}"))
        except ApiError as exc:
            return Outcome.failed(READY, node.name, str(exc))

    # --- apply ------------------------------------------------------------------------------

    async def apply(self, run: RunContext) -> None:
        await run.each(run.topo.workers, lambda node: self._install(run, node))
        await run.each(run.topo.workers, lambda node: self._wait_units(run, node))
        await run.each(run.topo.workers, lambda node: self._wait_ready(run, node))

    async def _install(self, run: RunContext, node: Node) -> None:
        facts = await self._facts(run, node)
        run.log(node.name, f"facts: {facts.describe()}")
        await run.sh(node.name, install_missing(packages_for(facts)), timeout=LOCK_WAIT + 600)
        await run.sh(node.name, kernel_command(facts))
        restarts = restart_inputs(node)
        await self.releases.install(run, node.name, restarts=restarts)
        await run.place(node.name, worker_files(run.artifacts, node, facts), restarts=restarts)
        await run.sh(node.name, f"sysctl -q -p {SYSCTL_FILE}")
        await run.sh(node.name, shlex.join(["systemctl", "enable", *UNITS]))
        await run.start_units(node.name, UNITS)  # containerd first: the kubelet needs its socket

    async def _wait_units(self, run: RunContext, node: Node) -> None:
        """Until every unit is active with the same main process on two polls in a row. A unit that
        fails or restarts meanwhile (a kubelet refusing its flags) fails the stage at once."""
        command = shlex.join(["systemctl", "show", "--property=Id,ActiveState,SubState,NRestarts,MainPID", *UNITS])
        first: dict[str, dict[str, str]] = {}
        previous: dict[str, dict[str, str]] | None = None

        async def settled() -> bool | None:
            nonlocal first, previous
            states = show_blocks((await run.sh(node.name, command, check=False, timeout=30)).stdout)
            first = first or states
            for unit in UNITS:
                state = states.get(unit, {})
                restarted = int(state.get("NRestarts", "0") or 0) > int(first.get(unit, {}).get("NRestarts", "0") or 0)
                if state.get("ActiveState") == "failed" or state.get("SubState") == "auto-restart" or restarted:
                    lines = await self._journal(run, node, unit)
                    last = lines[-1] if lines else "(no output)"
                    raise StageFailed(f"{unit} on {node.name} does not stay up: {last}", node.name, lines)
            up = all(states.get(u, {}).get("ActiveState") == "active" for u in UNITS)
            done, previous = up and states == previous, (states if up else None)
            return True if done else None

        try:
            await poll(settled, timeout=START_TIMEOUT, interval=1.0, what=f"containerd, kubelet and kube-proxy on {node.name} to stay up")
        except TimeoutError as exc:
            raise StageFailed(str(exc), node.name, await self._journal(run, node, *UNITS)) from None

    async def _journal(self, run: RunContext, node: Node, *units: str) -> tuple[str, ...]:
        """The units' own last output lines (what the programs printed, not systemd's notes)."""
        matches = [f"_SYSTEMD_UNIT={u}.service" for u in units]
        command = shlex.join(["journalctl", *matches, "-n", str(JOURNAL_LINES), "-o", "cat", "--no-pager"])
        return tuple((await run.sh(node.name, command, check=False, timeout=30)).stdout.splitlines()[-JOURNAL_LINES:])

    async def _wait_ready(self, run: RunContext, node: Node) -> None:
        """Until the API server reports the node Ready, or shows it cannot tell (unverified)."""
        last: Outcome | None = None

        async def ready() -> Outcome | None:
            nonlocal last
            last = await self._ready(run, node)
            return last if last.result != FAILED else None

        try:
            await poll(ready, timeout=READY_TIMEOUT, interval=2.0, what=f"{node.name} to be Ready")
        except TimeoutError as exc:
            evidence = last.evidence if last else ""
            raise StageFailed(f"{exc}: {evidence.splitlines()[0] if evidence else ''}", node.name, await self._journal(run, node, "kubelet")) from None

    # --- probe ------------------------------------------------------------------------------

    async def probe(self, run: RunContext) -> list[Outcome]:
        return await run.each(run.topo.workers, lambda node: self._probe_node(run, node))

    async def _probe_node(self, run: RunContext, node: Node) -> Outcome:
        command = shlex.join(["systemctl", "is-active", *UNITS])
        result = await run.sh(node.name, command, check=False, timeout=15)
        make = Outcome.passed if result.exit_status == 0 else Outcome.failed
        return make("worker units", node.name, ", ".join(f"{u} {s}" for u, s in zip(UNITS, result.stdout.split(), strict=False)))


STAGE = WorkersStage
