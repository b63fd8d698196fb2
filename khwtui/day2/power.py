"""`khwtui stop` and `khwtui start`: the nodes powered off and on, the cluster as it was.

Nothing is rebuilt: etcd and every unit are enabled, so they come back at boot. `start` reads the
nodes' addresses back from the provider (a cloud may hand out new external addresses), keeps the
pinned host keys (a node presenting another key stops it), and re-issues and rolls out the
certificates that name an address that changed.
"""

from __future__ import annotations

import sys

from khwtui.core.errors import EXIT_FAILED, EXIT_OK
from khwtui.day2.operation import require_nodes, run_operation
from khwtui.model.cluster import Cluster
from khwtui.providers.base import Provider
from khwtui.toolkit.run_context import RunContext


def stop_command(cluster: Cluster, yes: bool) -> int:
    from khwtui.engine.teardown import confirm

    provider_notes = _provider(cluster).stop_notes()  # machines: exit 2 here, before anything
    require_nodes(cluster, "compute")
    for note in provider_notes:
        print(note)
    if not yes and not confirm(cluster.config.cluster.name, sys.stdin, "stop", "nothing was stopped", "stop its nodes"):
        print("nothing was stopped")
        return EXIT_FAILED

    async def work(run: RunContext) -> None:
        await run.provider.stop(print)

    run_operation(cluster, "stop", work)
    print(f"stopped the nodes of cluster {cluster.config.cluster.name}; `khwtui start` powers them on again")
    return EXIT_OK


def _provider(cluster: Cluster) -> Provider:
    from khwtui.providers.factory import make_provider

    return make_provider(cluster)


async def start(run: RunContext) -> list[str]:
    """Power on, record the addresses read back, re-issue and roll out certificates naming changed
    addresses; returns the names of the certificates re-issued."""
    from khwtui.artifacts.pki import Pki
    from khwtui.day2.cert_rollout import print_rollouts, roll_out
    from khwtui.stages.compute import record_endpoints

    before = {name: (r.external_ip, r.ssh_host) for name, r in run.state.nodes.items()}
    record_endpoints(run, await run.provider.start(print))
    for name, record in run.state.nodes.items():
        if before.get(name, (record.external_ip, record.ssh_host)) != (record.external_ip, record.ssh_host):
            print(f"{name}: address now {record.external_ip or record.ssh_host} (was {before[name][0] or before[name][1]})")
    pki = Pki(run.cluster.state_dir.pki_dir, run.config)
    reissued = [name for name, change in pki.ensure(run.topo).items() if change.startswith("reissued")]
    run.state.renewals.update({name: f"{pki.serial(name):x}" for name in reissued})  # a killed start rolls them out on rerun
    run.save()
    run.forget_artifacts()
    pending = sorted(run.state.renewals)
    if pending:
        print_rollouts(await roll_out(run, pending))
    return pending


def start_command(cluster: Cluster) -> int:
    _provider(cluster).stop_notes()  # machines: exit 2 here, before anything
    require_nodes(cluster, "compute")
    reissued = run_operation(cluster, "start", start)
    renewed = f"; re-issued and rolled out {', '.join(reissued)} for the new addresses" if reissued else ""
    print(f"started the nodes of cluster {cluster.config.cluster.name}{renewed}; `khwtui status` shows their health")
    return EXIT_OK
