"""routes: every node reaches every worker's pod CIDR (KTHW Lab 11).

On local and machines nodes each node gets a route to every other worker's pod CIDR through that
worker, kept in a systemd unit of its own (workers_files.routes_unit) so the routes come back
when the node restarts, from the node's own configuration. On gcp the routes are cloud resources:
the provider makes them (`ensure_routes`) and the check reads them back (`routes_problems`).
"""

from __future__ import annotations

from typing import cast

from khwtui.artifacts.workers_files import ROUTES_UNIT, node_routes, routes_files, unit_path
from khwtui.core.outcome import Outcome
from khwtui.model.topology import Node, Route
from khwtui.providers.base import CloudNetwork
from khwtui.stages.base import Stage
from khwtui.toolkit.run_context import RunContext

ROUTE_TABLE = "ip -4 route show"
ROUTE_UNIT_NAME = f"{ROUTES_UNIT}.service"


def missing_routes(table: str, routes: list[Route]) -> list[Route]:
    """The routes `ip -4 route show` does not list as `<destination> via <next hop>`."""
    present = {tuple(line.split()[:3]) for line in table.splitlines()}
    return [r for r in routes if (r.destination, "via", r.via) not in present]


class RoutesStage(Stage):
    async def check(self, run: RunContext) -> list[Outcome]:
        if run.config.provider.kind == "gcp":
            return [await self._cloud_outcome(run)]
        return await run.each(run.topo.nodes, lambda node: self._check_node(run, node))

    async def _check_node(self, run: RunContext, node: Node) -> Outcome:
        routes = node_routes(run.topo, node)
        if not routes:
            return Outcome.passed("pod routes", node.name, "no other worker to reach")
        drift = await run.drifted(node.name, routes_files(run.topo, node))
        enabled = await run.sh(node.name, f"systemctl is-enabled {ROUTE_UNIT_NAME}", check=False, timeout=30)
        table = await run.sh(node.name, ROUTE_TABLE, check=False, timeout=30)
        missing = missing_routes(table.stdout, routes)
        problems = ([f"{unit_path(ROUTES_UNIT)} differs"] if drift else []) + \
                   ([f"{ROUTE_UNIT_NAME} is {enabled.stdout.strip() or 'not enabled'}"] if enabled.exit_status != 0 else []) + \
                   [f"no route {r.destination} via {r.via} ({r.worker})" for r in missing]
        if problems:
            return Outcome.failed("pod routes", node.name, "; ".join(problems) + f"\n$ {ROUTE_TABLE}\n{table.stdout}")
        shown = ", ".join(f"{r.destination} via {r.via}" for r in routes)
        return Outcome.passed("pod routes", node.name, f"{shown}; kept across restarts by {ROUTE_UNIT_NAME}")

    async def apply(self, run: RunContext) -> None:
        if run.config.provider.kind == "gcp":
            await cast(CloudNetwork, run.provider).ensure_routes(lambda line: run.log("", line))
            return
        await run.each(run.topo.nodes, lambda node: self._install(run, node))

    async def _install(self, run: RunContext, node: Node) -> None:
        files = routes_files(run.topo, node)
        if not files:
            return
        await run.place(node.name, files, restarts={ROUTES_UNIT: [f.path for f in files]})
        await run.sh(node.name, f"systemctl enable {ROUTE_UNIT_NAME}")
        table = await run.sh(node.name, ROUTE_TABLE, timeout=30)
        if missing_routes(table.stdout, node_routes(run.topo, node)) and not run.restart_due(node.name, ROUTES_UNIT):
            await run.sh(node.name, f"systemctl restart {ROUTE_UNIT_NAME}")  # re-adds what is missing
        await run.start_units(node.name, [ROUTES_UNIT])

    async def probe(self, run: RunContext) -> list[Outcome]:
        """The route table of every node that needs routes (one command each); on gcp the cloud
        routes, read back (one GET each)."""
        if run.config.provider.kind == "gcp":
            return [await self._cloud_outcome(run)]
        return await run.each([n for n in run.topo.nodes if node_routes(run.topo, n)], lambda node: self._probe_node(run, node))

    async def _probe_node(self, run: RunContext, node: Node) -> Outcome:
        table = await run.sh(node.name, ROUTE_TABLE, check=False, timeout=15)
        missing = missing_routes(table.stdout, node_routes(run.topo, node))
        if missing:
            return Outcome.failed("pod routes", node.name, "missing: " + ", ".join(f"{r.destination} via {r.via}" for r in missing))
        return Outcome.passed("pod routes", node.name, ", ".join(f"{r.destination} via {r.via}" for r in node_routes(run.topo, node)))

    # --- gcp: the provider's cloud routes ---------------------------------------------------

    async def _cloud_outcome(self, run: RunContext) -> Outcome:
        problems = await cast(CloudNetwork, run.provider).routes_problems()
        if problems:
            return Outcome.failed("cloud routes", "", "\n".join(problems))
        shown = ", ".join(f"{w.pod_cidr} via {w.internal_ip}" for w in run.topo.workers)
        return Outcome.passed("cloud routes", "", shown or "no workers, no routes")


STAGE = RoutesStage
