"""etcd snapshot and disaster recovery on the controllers, as etcd's guide does it.

Snapshot: `etcdctl snapshot save` on a healthy member, copied back and checked by SHA-256.
Restore (etcd op-guide/recovery.md, v3.4 and v3.6): stop the apiservers and every member, restore
the same snapshot on each member into a fresh data dir with its own name and peer URL, the
cluster's --initial-cluster and token, start all members at once, then the apiservers. etcd 3.5+
restores with etcdutl, 3.4 with `etcdctl snapshot restore`.

Each member's restore is rerunnable: the snapshot is restored into a side folder that is removed
first, then swapped in for the data dir; a restore killed half way is simply run again.
"""

from __future__ import annotations

import hashlib
import shlex

from khwtui.artifacts.nodefiles import ETCD_DATA_DIR, etcd_token
from khwtui.core.errors import StageFailed
from khwtui.model.topology import ETCD_PEER_PORT, Node
from khwtui.stages.etcd import ETCDCTL, ETCDUTL, UNIT, etcdctl, has_etcdutl, wait_member_healthy
from khwtui.toolkit.run_context import RunContext

WORK_DIR = "/var/lib/khwtui-etcd"  # root-only scratch space for snapshots on a controller
SNAPSHOT_PATH = f"{WORK_DIR}/snapshot.db"
RESTORED_DIR = f"{ETCD_DATA_DIR}.restored"
REPLACED_DIR = f"{ETCD_DATA_DIR}.replaced"
APISERVER = "kube-apiserver"


async def healthy_member(run: RunContext) -> Node:
    """The first controller whose member answers `endpoint health`."""
    answers = []
    for node in run.topo.controllers:
        result = await run.sh(node.name, etcdctl("endpoint", "health"), check=False, timeout=30)
        if result.exit_status == 0:
            return node
        answers.append(f"{node.name}: {(result.stdout + result.stderr).strip().splitlines()[-1:] or ['no answer']}")
    raise StageFailed(f"no healthy etcd member to take a snapshot from ({'; '.join(answers)})")


async def save_snapshot(run: RunContext) -> bytes:
    """A snapshot from a healthy member, copied back; its SHA-256 is checked against the node's."""
    node = await healthy_member(run)
    await run.sh(node.name, f"install -d -m 0700 {WORK_DIR} && rm -f {SNAPSHOT_PATH}")
    await run.sh(node.name, etcdctl("snapshot", "save", SNAPSHOT_PATH), timeout=600)
    summed = await run.sh(node.name, f"sha256sum {SNAPSHOT_PATH}")
    data = await run.remote.get(run.host(node.name), SNAPSHOT_PATH)
    await run.sh(node.name, f"rm -f {SNAPSHOT_PATH}")
    if hashlib.sha256(data).hexdigest() != summed.stdout.split()[0]:
        raise StageFailed(f"the snapshot copied from {node.name} does not match its SHA-256 there; run the backup again", node.name)
    run.log("", f"etcd snapshot from {node.name}: {len(data)} bytes, SHA-256 {hashlib.sha256(data).hexdigest()}")
    return data


def restore_command(run: RunContext, node: Node) -> str:
    """The guide's restore for one member into RESTORED_DIR, with the tool this etcd version has."""
    flags = [
        "--name", node.name,
        "--initial-cluster", run.topo.etcd_initial_cluster,
        "--initial-cluster-token", etcd_token(run.topo),
        "--initial-advertise-peer-urls", f"https://{node.internal_ip}:{ETCD_PEER_PORT}",
        "--data-dir", RESTORED_DIR,
    ]  # fmt: skip
    if has_etcdutl(run.config.versions.etcd):
        return shlex.join([ETCDUTL, "snapshot", "restore", SNAPSHOT_PATH, *flags])
    return shlex.join(["env", "ETCDCTL_API=3", ETCDCTL, "snapshot", "restore", SNAPSHOT_PATH, *flags])


def swap_command() -> str:
    """Put the restored data dir in place of the old one (kept aside until the cluster is healthy)."""
    return (f"rm -rf {REPLACED_DIR} && if [ -d {ETCD_DATA_DIR} ]; then mv {ETCD_DATA_DIR} {REPLACED_DIR}; fi "
            f"&& mv {RESTORED_DIR} {ETCD_DATA_DIR} && chmod 0700 {ETCD_DATA_DIR}")


def _runs_apiserver(run: RunContext, node: Node) -> bool:
    return APISERVER in run.state.nodes[node.name].units


async def restore(run: RunContext, snapshot: bytes) -> None:
    """Disaster recovery of every member from `snapshot`; the apiservers are down meanwhile."""
    controllers = run.topo.controllers
    with_apiserver = [n for n in controllers if _runs_apiserver(run, n)]
    await run.each(with_apiserver, lambda n: run.sh(n.name, f"systemctl stop {APISERVER}"))
    await run.each(controllers, lambda n: run.sh(n.name, f"systemctl stop {UNIT}"))
    await run.each(controllers, lambda n: _restore_member(run, n, snapshot))
    await run.each(controllers, lambda n: run.sh(n.name, f"systemctl start --no-block {UNIT}"))
    await run.each(controllers, lambda n: wait_member_healthy(run, n))
    await run.each(controllers, lambda n: run.sh(n.name, f"rm -rf {REPLACED_DIR} {SNAPSHOT_PATH}"))
    await run.each(with_apiserver, lambda n: run.sh(n.name, f"systemctl start {APISERVER}"))


async def _restore_member(run: RunContext, node: Node, snapshot: bytes) -> None:
    await run.sh(node.name, f"install -d -m 0700 {WORK_DIR} && rm -rf {RESTORED_DIR}")
    await run.remote.put(run.host(node.name), snapshot, SNAPSHOT_PATH, mode=0o600)
    await run.sh(node.name, restore_command(run, node), timeout=600)
    await run.sh(node.name, swap_command())
