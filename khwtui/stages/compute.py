"""compute: the nodes exist, their host keys are pinned in state, SSH with sudo works, and every
node's /etc/hosts holds every node's name (hosts_table).

Keys are pinned the moment the provider reports them and before any command is sent; a key
that differs from the pinned one later stops the run (never silently re-pinned).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from khwtui.artifacts import hosts_table
from khwtui.core.errors import StageFailed
from khwtui.core.outcome import Outcome
from khwtui.model.topology import Node
from khwtui.stages.base import Stage
from khwtui.toolkit.run_context import RunContext, node_record

if TYPE_CHECKING:
    from khwtui.providers.base import NodeEndpoint

SSH_TIMEOUT = 60


class ComputeStage(Stage):
    async def check(self, run: RunContext) -> list[Outcome]:
        found = {ep.name: ep for ep in await run.provider.nodes()}
        outcomes = []
        reachable = []
        for node in run.topo.nodes:
            ep = found.get(node.name)
            pinned = run.state.nodes.get(node.name)
            if ep is None:
                outcomes.append(Outcome.failed("node exists", node.name, "not found"))
            elif pinned is None or not pinned.host_key:
                outcomes.append(Outcome.failed("host key pinned", node.name, "not pinned yet"))
            elif pinned.host_key != ep.host_key:
                outcomes.append(Outcome.failed("host key pinned", node.name, f"pinned {pinned.host_key[:40]}..., node presents {ep.host_key[:40]}..."))
            else:
                reachable.append(node)
        outcomes += await run.each(reachable, lambda node: self._ssh(run, node))
        outcomes += await run.each(reachable, lambda node: self._hosts_table(run, node))
        return outcomes

    async def _hosts_table(self, run: RunContext, node: Node) -> Outcome:
        result = await run.sh(node.name, hosts_table.check_command(run.topo), check=False, timeout=SSH_TIMEOUT)
        if hosts_table.PRESENT in result.stdout:
            return Outcome.passed("node names in /etc/hosts", node.name)
        return Outcome.failed("node names in /etc/hosts", node.name, f"{hosts_table.HOSTS} lacks this cluster's node names")

    async def _ssh(self, run: RunContext, node: Node) -> Outcome:
        result = await run.sh(node.name, "true", check=False, timeout=SSH_TIMEOUT)
        if result.exit_status == 0:
            return Outcome.passed("ssh and sudo", node.name)
        return Outcome.failed("ssh and sudo", node.name, f"$ sudo -n true -> exit {result.exit_status}\n{result.stderr}")

    async def apply(self, run: RunContext) -> None:
        record_endpoints(run, await run.provider.ensure(lambda line: run.log("", line)))
        await run.each(run.topo.nodes, lambda node: run.sh(node.name, hosts_table.ensure_command(run.topo), timeout=SSH_TIMEOUT))

    async def probe(self, run: RunContext) -> list[Outcome]:
        return await run.each([n for n in run.topo.nodes if n.name in run.state.nodes], lambda node: self._ssh(run, node))


def record_endpoints(run: RunContext, endpoints: list[NodeEndpoint]) -> None:
    """Save the nodes' addresses as the provider reports them; a host key other than the pinned one
    stops the run before anything is sent."""
    for ep in endpoints:
        record = run.state.nodes.get(ep.name)
        if record and record.host_key and record.host_key != ep.host_key:
            raise StageFailed(
                f"{ep.name} presents a host key that differs from the pinned one; nothing was sent. "
                "If the node was rebuilt on purpose, remove its host_key from state.toml",
                ep.name,
            )
        if record is None:
            record = node_record(run.topo.node(ep.name))
            run.state.nodes[ep.name] = record
        record.role, record.internal_ip, record.external_ip = ep.role, ep.internal_ip, ep.external_ip or ""
        record.ssh_host, record.ssh_port, record.host_key = ep.ssh_host, ep.ssh_port, ep.host_key
    run.state.public_address = run.provider.api_address() or ""
    run.save()
    run.forget_artifacts()


STAGE = ComputeStage
