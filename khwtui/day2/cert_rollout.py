"""`khwtui certs --renew`: re-issue leaf certificates and roll them out live, one node at a time.

On each node only the files that embed a renewed certificate are placed (certificate files and the
kubeconfigs that carry it), and only the units that read one of those files restart; then the node
must serve the new certificate before the next node is touched: its serial is read from etcd's and
the apiserver's TLS endpoints with `openssl s_client`, and the kubeconfigs are read back.

A killed renewal resumes: the serial re-issued is kept in state (`renewals`) until every node is
done, so a rerun rolls out the same certificate instead of making another; and a unit restarts
when a file it reads changed now, or changed after the unit last started (a restart the killed run
did not get to).
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass

from khwtui.artifacts.controlplane_files import UNITS as CONTROL_PLANE_UNITS
from khwtui.artifacts.controlplane_files import control_plane_files, unit_inputs
from khwtui.artifacts.nodefiles import ETCD_DIR, Artifacts, etcd_files, node_files
from khwtui.artifacts.pki import CA_NAME, Pki, cert_specs
from khwtui.artifacts.render import NodeFile
from khwtui.artifacts.workers_files import restart_inputs
from khwtui.core import crashpoints
from khwtui.core.errors import StageFailed, UsageError
from khwtui.core.events import PASSED
from khwtui.core.waiting import poll
from khwtui.model.cluster import Cluster
from khwtui.model.topology import ETCD_CLIENT_PORT, Node, Topology
from khwtui.stages.etcd import wait_member_healthy
from khwtui.toolkit.run_context import RunContext

RESTART_TIMEOUT = 180
SERVING = "kubernetes"  # the certificate etcd and the apiserver serve
# Did `unit` start before the newest of the given files was written? ($1: unit, then the files)
DUE = """s=$(date -d "$(systemctl show -p ActiveEnterTimestamp --value "$1")" +%s 2>/dev/null || echo 0); shift
for f in "$@"; do if [ "$(stat -c %Y "$f" 2>/dev/null || echo 0)" -gt "$s" ]; then echo due; exit 0; fi; done; echo fresh"""


@dataclass(frozen=True)
class NodeRollout:
    """What renewing touched on one node."""

    node: str
    placed: tuple[str, ...]
    restarted: tuple[str, ...]
    served: tuple[str, ...]  # "etcd serial 1a2b..." lines


def leaf_names(topo: Topology, text: str | None, every: bool) -> list[str]:
    """The certificates to renew from --renew NAME[,NAME] or --renew-all, checked against the table."""
    known = [spec.name for spec in cert_specs(topo)]
    if every:
        return known
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if CA_NAME in names:
        raise UsageError("--renew: the CA is not renewed here (every node and kubeconfig trusts it); rotate it by hand as the README's certificate section says")
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(f"--renew: {', '.join(unknown) or 'no name given'} is not a certificate of this cluster; pick from {', '.join(known)}")
    return names


def unit_readers(a: Artifacts, node: Node) -> dict[str, set[str]]:
    """unit -> the node files it reads at start, for every unit khwtui runs on a node of this role."""
    if node.role == "controller":
        readers = {"etcd": {f.path for f in etcd_files(a, node)}}
        if a.topo.api_url is not None:  # the control-plane units exist only once the endpoint is known
            files = control_plane_files(a, node)
            readers.update({unit: unit_inputs(unit, files) for unit in CONTROL_PLANE_UNITS})
        return readers
    if node.role == "worker":
        return {unit: set(paths) for unit, paths in restart_inputs(node).items()}
    return {}


def embedding(files: list[NodeFile], pems: list[bytes]) -> list[NodeFile]:
    """The files that carry one of the certificates: the PEM itself, or base64 in a kubeconfig."""
    marks = [m for pem in pems for m in (pem, base64.b64encode(pem))]
    return [f for f in files if any(m in f.content for m in marks)]


def plan_node(run: RunContext, node: Node, renewed: list[str]) -> tuple[list[NodeFile], dict[str, set[str]]]:
    """The renewed files this node holds (only those a stage placed before) and the installed units
    that read them."""
    record = run.state.nodes[node.name]
    a = run.artifacts
    held = [f for f in node_files(a).get(node.name, []) if f.path in record.files]
    touched = embedding(held, [a.pki.cert_pem(name) for name in renewed])
    paths = {f.path for f in touched}
    units = {unit: inputs & paths for unit, inputs in unit_readers(a, node).items() if unit in record.units and inputs & paths}
    return touched, units


async def restart_due(run: RunContext, node: Node, unit: str, paths: set[str]) -> bool:
    """Whether one of `paths` was written after `unit` last started (a killed run placed, not restarted)."""
    result = await run.sh(node.name, shlex.join(["sh", "-c", DUE, "khwtui-due", unit, *sorted(paths)]), timeout=30)
    return result.stdout.strip() == "due"


async def served_serial(run: RunContext, node: Node, port: int) -> int | None:
    """The serial of the certificate served on 127.0.0.1:`port` of the node (TLS with the cluster's
    client certificate, as etcd asks for one)."""
    tls = ["-CAfile", f"{ETCD_DIR}/ca.pem", "-cert", f"{ETCD_DIR}/kubernetes.pem", "-key", f"{ETCD_DIR}/kubernetes-key.pem"]
    client = shlex.join(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *tls])
    command = f"{client} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    result = await run.sh(node.name, command, check=False, timeout=30)
    text = result.stdout.strip()
    return int(text.split("=", 1)[1], 16) if result.exit_status == 0 and text.startswith("serial=") else None


async def _wait_unit(run: RunContext, node: Node, unit: str) -> None:
    if unit == "etcd":
        await wait_member_healthy(run, node)
        return

    async def active() -> bool | None:
        result = await run.sh(node.name, f"systemctl is-active {unit}", check=False, timeout=30)
        return True if result.stdout.strip() == "active" else None

    try:
        await poll(active, timeout=RESTART_TIMEOUT, interval=1.0, what=f"{unit} on {node.name} to be active again")
    except TimeoutError as exc:
        raise StageFailed(str(exc), node.name) from None


async def _verify(run: RunContext, node: Node, units: dict[str, set[str]], renewed: list[str]) -> list[str]:
    """The node serves the renewed serving certificate on each TLS endpoint that uses it."""
    if SERVING not in renewed:
        return []
    want = run.artifacts.pki.serial(SERVING)
    endpoints = {"etcd": ETCD_CLIENT_PORT, "kube-apiserver": run.config.network.api_port}
    served = []
    for unit, port in endpoints.items():
        if unit not in units:
            continue
        async def serial_is_new(port: int = port) -> int | None:
            got = await served_serial(run, node, port)
            return got if got == want else None

        try:
            await poll(serial_is_new, timeout=RESTART_TIMEOUT, interval=1.0, what=f"{unit} on {node.name} to serve serial {want:x}")
        except TimeoutError as exc:
            raise StageFailed(f"{exc}; it serves {await served_serial(run, node, port)!r}", node.name) from None
        served.append(f"{unit} on 127.0.0.1:{port} serves serial {want:x}")
    return served


async def roll_out_node(run: RunContext, node: Node, renewed: list[str]) -> NodeRollout:
    """Place, restart what reads a changed file, verify; the next node waits for this one."""
    touched, units = plan_node(run, node, renewed)
    changed = set(await run.place(node.name, touched))
    stale = await run.drifted(node.name, touched)  # read back: the node holds exactly the new files
    if stale:
        raise StageFailed(f"{node.name}: {', '.join(f.path for f in stale)} still differ after placing them", node.name)
    restarted = []
    for unit, paths in units.items():
        if paths & changed or await restart_due(run, node, unit, paths):
            run.log(node.name, f"{unit}: renewed certificate in {', '.join(sorted(paths))}, restarting")
            await run.sh(node.name, f"systemctl restart {unit}", timeout=RESTART_TIMEOUT)
            await _wait_unit(run, node, unit)
            restarted.append(unit)
    served = await _verify(run, node, units, renewed)
    return NodeRollout(node.name, tuple(sorted(f.path for f in touched)), tuple(restarted), tuple(served))


def reissue(run: RunContext, names: list[str]) -> dict[str, str]:
    """Re-issue `names`, except those already re-issued by a run that was cut short (kept in state)."""
    pki = Pki(run.cluster.state_dir.pki_dir, run.config)
    pending = run.state.renewals
    todo = [n for n in names if pending.get(n) != f"{pki.serial(n) or 0:x}"]
    for name, serial in pki.reissue(run.topo, todo).items():
        pending[name] = f"{serial:x}"
    run.save()
    run.forget_artifacts()
    return {name: ("re-issued" if name in todo else "resumed") for name in names}


async def renew(run: RunContext, names: list[str]) -> list[NodeRollout]:
    """Re-issue, then roll out."""
    for name, how in reissue(run, names).items():
        run.log("", f"certificate {name}: {how}, serial {run.state.renewals[name]}")
    return await roll_out(run, names)


async def roll_out(run: RunContext, names: list[str]) -> list[NodeRollout]:
    """The certificates `names` as they are in pki/: refresh the kubeconfigs in the state folder,
    then every node, one at a time; the pending renewals are cleared when all are done."""
    from khwtui.stages.admin_access import AdminAccessStage
    from khwtui.stages.kubeconfigs import KubeconfigsStage

    await KubeconfigsStage().apply(run)
    if run.state.stage("admin-access").status == PASSED:
        await AdminAccessStage().apply(run)
    done: list[list[NodeRollout]] = []
    for node in run.topo.nodes:
        if node.name in run.state.nodes and run.state.nodes[node.name].host_key:
            if done:
                crashpoints.reached("rollout.next-node")
            done.append(await run.each([node], lambda n: roll_out_node(run, n, names)))
    for name in names:
        run.state.renewals.pop(name, None)
    run.save()
    return [rollout for (rollout,) in done]


def renew_command(cluster: Cluster, text: str | None, every: bool) -> int:
    """`khwtui certs --renew NAME[,NAME]` / `--renew-all`: prints what each node got; exit 0 or 1."""
    from khwtui.day2.operation import run_operation

    names = leaf_names(cluster.topology, text, every)
    print_rollouts(run_operation(cluster, "certs", lambda run: renew(run, names)))
    print(f"renewed {', '.join(names)}: every node holds and serves the new certificates")
    return 0


def print_rollouts(rollouts: list[NodeRollout]) -> None:
    for r in rollouts:
        what = [f"placed {', '.join(r.placed)}" if r.placed else "holds none of them"]
        what += [f"restarted {', '.join(r.restarted)}"] if r.restarted else []
        print(f"{r.node}: {'; '.join(what + list(r.served))}")


def renew_summary(cluster: Cluster, names: list[str]) -> str:
    """The same renewal for the TUI: nothing printed (the commands go to the node logs); one line back."""
    from khwtui.day2.operation import run_operation

    leaf_names(cluster.topology, ",".join(names), False)
    rollouts = run_operation(cluster, "certs", lambda run: renew(run, names), sink=_quiet)
    restarted = sorted({f"{unit} on {r.node}" for r in rollouts for unit in r.restarted})
    return f"renewed {', '.join(names)}: restarted {', '.join(restarted) or 'nothing'}; every node serves the new certificates"


def _quiet(event: object) -> None:
    """The TUI shows the outcome; the renewal's own events would scroll over it."""
