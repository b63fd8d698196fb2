"""frontend: the load balancer in front of every controller's apiserver (KTHW Lab 08's front end).

local and machines: haproxy on the lb host, from the node's own apt sources, TCP passthrough
with active TLS checks of each apiserver's /readyz. machines without an lb host: the first
controller is the API endpoint, with a warning (no load balancer, not highly available). gcp:
the provider makes the cloud load balancer (`ensure_frontend`); for KTHW's target pool, whose
legacy health check speaks only plain HTTP, each controller first gets KTHW's nginx site proxying
:80/healthz to its apiserver over verified TLS. The check is KTHW's: /version answered through
the API endpoint from the operator's machine, plus, with haproxy, each controller's state as the
load balancer sees it, and on gcp each controller's /healthz proxy and the cloud resources.
"""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import dataclass
from typing import cast

from khwtui.artifacts.frontend_files import (
    CA_FILE,
    CONFIG,
    STATS_PATH,
    STATS_PORT,
    healthz_files,
    healthz_host,
    healthz_proxied,
    lb_files,
)
from khwtui.artifacts.render import NodeFile
from khwtui.core.errors import StageFailed
from khwtui.core.events import PASSED
from khwtui.core.outcome import Outcome
from khwtui.core.waiting import poll
from khwtui.model.topology import Node, Topology
from khwtui.providers.base import CloudNetwork
from khwtui.stages.base import Stage
from khwtui.toolkit.apt import LOCK_WAIT, install_missing
from khwtui.toolkit.run_context import RunContext
from khwtui.transport.kubeapi import ApiClient, ApiError, Credentials

UNIT = "haproxy"
BACKEND = "kube-apiservers"
STATS = shlex.join(["/usr/bin/curl", "--silent", "--show-error", "--max-time", "5", f"http://127.0.0.1:{STATS_PORT}{STATS_PATH};csv"])
PROXY = "nginx"
HEALTHZ_CHECK = "/healthz proxy for the health check"
CLOUD_CHECK = "load balancer resources"
SERVING_TIMEOUT = 120
VERSION_CHECK = "/version through the load balancer"


@dataclass(frozen=True)
class Backend:
    """One controller as haproxy sees it: UP/DOWN (or "UP 1/2" while changing) and its last check."""

    name: str
    status: str
    check: str

    @property
    def healthy(self) -> bool:
        return self.status == "UP" and self.check.startswith("L7OK")

    def __str__(self) -> str:
        return f"{self.name} {self.status} ({self.check})"


def apt_install(program: str) -> str:
    """Install `program` (and curl, for the checks) from the node's own apt sources, unless installed."""
    return install_missing((program, "curl"))


def healthz_probe(topo: Topology) -> str:
    """KTHW's `curl -H "Host: kubernetes.default.svc.cluster.local" -i http://127.0.0.1/healthz`: the status code."""
    return shlex.join([
        "/usr/bin/curl", "--silent", "--show-error", "--max-time", "5", "--output", "/dev/null", "--write-out", "%{http_code}",
        "-H", f"Host: {healthz_host(topo)}", "http://127.0.0.1/healthz",
    ])


def parse_backends(text: str) -> dict[str, Backend]:
    """The controllers of our backend from haproxy's stats CSV (header "# pxname,svname,...")."""
    rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
    found = {}
    for row in rows:
        if row.get("pxname") == BACKEND and row.get("svname") not in ("BACKEND", "FRONTEND"):
            last = row.get("last_chk") or row.get("check_desc") or ""
            # "* L7OK": the last status while the next check runs (haproxy 2.6 doc/management.txt,
            # "show stat" field 36 check_status) — the same result, so shown without the mark
            status = row.get("check_status", "").removeprefix("* ")
            found[row["svname"]] = Backend(row["svname"], row.get("status", ""), f"{status}: {last}".strip(": "))
    return found


class FrontendStage(Stage):
    # --- check ------------------------------------------------------------------------------

    async def check(self, run: RunContext) -> list[Outcome]:
        unavailable = self._unavailable(run)
        if unavailable:
            return [unavailable]
        lb = run.topo.lb
        if run.config.provider.kind == "gcp":  # noqa: SIM108 - a nested conditional expression would hide the lb case
            setup = [await self._cloud_outcome(run)]
        else:
            setup = list(await self._lb_outcomes(run, lb)) if lb else []
        return setup + await self._serving_outcomes(run)

    async def _cloud_outcome(self, run: RunContext) -> Outcome:
        problems = await cast(CloudNetwork, run.provider).frontend_problems()
        if problems:
            return Outcome.failed(CLOUD_CHECK, evidence="\n".join(problems))
        return Outcome.passed(CLOUD_CHECK, evidence=f"{run.config.gcp.load_balancer} on {run.topo.api_address}:{run.config.network.api_port}")

    async def _healthz_outcome(self, run: RunContext, node: Node) -> Outcome:
        command = healthz_probe(run.topo)
        result = await run.sh(node.name, command, check=False, timeout=30)
        code = result.stdout.strip()
        if result.exit_status == 0 and code == "200":
            return Outcome.passed(HEALTHZ_CHECK, node.name, f"http://127.0.0.1/healthz for {healthz_host(run.topo)}: 200")
        return Outcome.failed(HEALTHZ_CHECK, node.name, f"$ {command}\n{code or '(no status)'} {result.stderr}".rstrip())

    def _unavailable(self, run: RunContext) -> Outcome | None:
        if run.topo.api_url is None:
            return Outcome.failed(VERSION_CHECK, evidence="the API endpoint address is not known yet; run the compute stage first")
        return None

    async def _lb_outcomes(self, run: RunContext, lb: Node) -> tuple[Outcome, Outcome]:
        drift = await run.drifted(lb.name, lb_files(run.topo, run.artifacts.pki))
        files = (Outcome.failed("load balancer files", lb.name, "differ: " + ", ".join(f.path for f in drift)) if drift
                 else Outcome.passed("load balancer files", lb.name, f"{CONFIG} and {CA_FILE} in place"))
        result = await run.sh(lb.name, f"systemctl is-active {UNIT}", check=False, timeout=30)
        make = Outcome.passed if result.exit_status == 0 else Outcome.failed
        return files, make(f"{UNIT} active", lb.name, (result.stdout + result.stderr).strip())

    async def _serving_outcomes(self, run: RunContext) -> list[Outcome]:
        """Each controller as haproxy sees it (when there is an lb host), and /version through the endpoint."""
        lb = run.topo.lb
        if healthz_proxied(run.config):
            return [*await run.each(run.topo.controllers, lambda c: self._healthz_outcome(run, c)), await self._version_outcome(run, {})]
        if lb is None:
            return [await self._version_outcome(run, {})]
        backends, error = await self._backends(run, lb)
        return [*self._backend_outcomes(run, backends, error), await self._version_outcome(run, backends)]

    async def _backends(self, run: RunContext, lb: Node) -> tuple[dict[str, Backend], str]:
        """Each controller's state from haproxy's stats page on the lb, or why it could not be read."""
        result = await run.sh(lb.name, STATS, check=False, timeout=30)
        if result.exit_status != 0:
            return {}, f"$ {STATS}\n{result.stdout}{result.stderr}".rstrip()
        return parse_backends(result.stdout), ""

    def _backend_outcomes(self, run: RunContext, backends: dict[str, Backend], stats_error: str) -> list[Outcome]:
        outcomes = []
        for c in run.topo.controllers:
            seen = backends.get(c.name)
            if seen is None:
                evidence = stats_error or f"{c.name} is not a server of haproxy's {BACKEND}"
                outcomes.append(Outcome.failed("load balancer backend", c.name, evidence))
            else:
                make = Outcome.passed if seen.healthy else Outcome.failed
                outcomes.append(make("load balancer backend", c.name, str(seen)))
        return outcomes

    async def _version_outcome(self, run: RunContext, backends: dict[str, Backend]) -> Outcome:
        """KTHW's `curl --cacert ca.pem https://ADDRESS:6443/version`: anonymous (public-info-viewer)."""
        wanted = f"v{run.config.cluster.kubernetes_version}"
        client = ApiClient(Credentials(run.topo.api_url or "", run.artifacts.pki.ca_pem()))
        try:
            answer = await client.get("/version", absent_ok=False)
        except ApiError as exc:
            behind = "; ".join(str(b) for b in backends.values()) or ", ".join(c.name for c in run.topo.controllers)
            return Outcome.failed(VERSION_CHECK, evidence=f"no apiserver answered: {exc}\nbehind it: {behind}")
        version = answer.get("gitVersion") if isinstance(answer, dict) else None
        if version != wanted:
            return Outcome.failed(VERSION_CHECK, evidence=f"{client.server}/version answered {version!r}, wanted {wanted}")
        note = f" — warning: {run.topo.api_endpoint_warning}" if run.topo.api_endpoint_warning else ""
        return Outcome.passed(VERSION_CHECK, evidence=f"{client.server}/version: {version}{note}")

    # --- apply ------------------------------------------------------------------------------

    async def apply(self, run: RunContext) -> None:
        if run.config.provider.kind == "gcp":
            if healthz_proxied(run.config):
                files = healthz_files(run.topo)
                await run.each(run.topo.controllers, lambda c: self._install(run, c, PROXY, files, ["nginx", "-t", "-q"]))
            await cast(CloudNetwork, run.provider).ensure_frontend(lambda line: run.log("", line))
        elif run.topo.lb is not None:
            await self._install(run, run.topo.lb, UNIT, lb_files(run.topo, run.artifacts.pki), ["haproxy", "-c", "-q", "-f", CONFIG])
        else:
            run.log("", f"warning: {run.topo.api_endpoint_warning}")
        await self._wait_serving(run)

    async def _install(self, run: RunContext, node: Node, unit: str, files: list[NodeFile], validate: list[str]) -> None:
        """`unit`'s package from the node's apt sources, its files, validated, then (re)started."""
        await run.sh(node.name, apt_install(unit), timeout=LOCK_WAIT + 600)
        await run.place(node.name, files, restarts={unit: [f.path for f in files]})
        await run.sh(node.name, shlex.join(validate))
        await run.sh(node.name, f"systemctl enable {unit}")
        await run.start_units(node.name, [unit], restart="reload-or-restart")

    async def _wait_serving(self, run: RunContext) -> None:
        """Until every controller is UP behind haproxy (if there is one) and /version answers."""
        problems: list[str] = []

        async def serving() -> bool | None:
            nonlocal problems
            outcomes = await self._serving_outcomes(run)
            problems = [f"{o.node + ': ' if o.node else ''}{o.evidence}" for o in outcomes if o.result != PASSED]
            return None if problems else True

        try:
            await poll(serving, timeout=SERVING_TIMEOUT, interval=1.0, what="the load balancer to serve every apiserver")
        except TimeoutError as exc:
            raise StageFailed(str(exc), run.topo.lb.name if run.topo.lb else "", tuple(problems)) from None

    # --- probe ------------------------------------------------------------------------------

    async def probe(self, run: RunContext) -> list[Outcome]:
        unavailable = self._unavailable(run)
        return [unavailable] if unavailable else await self._serving_outcomes(run)


STAGE = FrontendStage
