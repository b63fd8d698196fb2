"""The workers and routes stages on a local 1 + 2 cluster, through the real CLI (issue 6).

One cluster serves every test here, in order: the build, pods with `ctr run --cni` on both
workers reaching each other across the routes, every placed file as rendered, a no-op rerun, a
node restart after its pod routes were deleted by hand, and last two programs refusing to start
(a kubelet flag the minor removed; kube-proxy setting the conntrack limit, read-only in a node's
network namespace). The kubelets' kernel settings are the host's while the cluster runs (the nodes
share its kernel), and the last `down` puts them back.
Worker-1's containerd folder is taken off its bind mount first, so it sits on the node's overlayfs
root and the settings decided from that fact are exercised on a real node too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import janitor
import pytest
from localcluster import K8S_VERSION, LocalCluster, local_config
from workerbed import (
    artifacts_of,
    assert_placed_as_rendered,
    bed_facts,
    install_standin_runtime,
    pod_cidr_contains,
    pod_ip,
    release_files,
    remove_pods,
    routes_of,
    shells,
    start_web_pod,
    stat_files,
    unit_starts,
    worker_apt_repo,
)

from khwtui.artifacts.controlplane_files import control_plane_files
from khwtui.artifacts.nodefiles import etcd_files
from khwtui.artifacts.workers_files import (
    CONTAINERD_CONFIG,
    FACTS_COMMAND,
    ROUTES_UNIT,
    NodeFacts,
    routes_files,
    worker_files,
)
from khwtui.providers.host_tunables import KUBELET_TUNABLES, HostTunables

pytestmark = pytest.mark.integration

WORKER_UNITS = ["containerd", "kubelet", "kube-proxy"]
NOT_READY = "the API server serves v1 without nodes (its discovery lists nothing), so whether {node} is Ready cannot be read there"
REMOVED_FLAG = "kubelet: unknown flag: --pod-infra-container-image (removed in Kubernetes 1.35)"
CONNTRACK_REFUSED = 'kube-proxy: "Error running ProxyServer" err="open /proc/sys/net/netfilter/nf_conntrack_max: permission denied"'


def build_up_to_workers(cluster: LocalCluster, overlay_node: str | None = None) -> list[dict]:
    """compute, the stand-ins' python3, the control plane, then frontend, workers and routes;
    returns the last run's events."""
    done = cluster.khwtui("up", "--auto", "--until", "compute")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: versions.etcd 3.4.23 is below 3.5.13+, 3.4.31+" in done.stderr  # Debian's etcd, kept on purpose
    nodes = shells(cluster.state_dir)
    install_standin_runtime([node for name, node in nodes.items() if name != "lb"])
    if overlay_node:
        nodes[overlay_node].run("umount /var/lib/containerd")
    done = cluster.khwtui("up", "--auto", "--until", "control-plane")
    assert done.returncode == 0, done.stdout + done.stderr
    done = cluster.khwtui("up", "--auto", "--only", "frontend,workers,routes", "--json")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr
    return events


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict) -> Iterator[tuple[LocalCluster, list[dict]]]:
    apt = worker_apt_repo(tmp_path_factory.getbasetemp() / "worker-apt")
    raw = local_config(f"t{janitor.new_prefix()}", 1, 2, release_mirror, binaries={"delivery": "node"})
    cluster = LocalCluster(tmp_path_factory.mktemp("workers") / "c", raw, apt=apt, releases=release_mirror)
    try:
        yield cluster, build_up_to_workers(cluster, overlay_node="worker-1")
    finally:
        cluster.down()
    assert not HostTunables().held_by(cluster.prefix)


@pytest.fixture(scope="module")
def cluster(built: tuple[LocalCluster, list[dict]]) -> LocalCluster:
    return built[0]


def test_workers_and_routes_are_built_and_ready_is_unverified_with_the_apiservers_reason(built: tuple[LocalCluster, list[dict]]) -> None:
    cluster, events = built
    stages = {e["stage"]: e["status"] for e in events if e["kind"] == "stage"}
    assert stages == {"frontend": "passed", "workers": "unverified", "routes": "passed"}
    unverified = sorted((e["node"], e["evidence"]) for e in events if e["kind"] == "check" and e["result"] == "unverified")
    assert unverified == [(n, NOT_READY.format(node=n)) for n in ("worker-0", "worker-1")]
    assert cluster.state()["stages"]["workers"]["status"] == "unverified"


def test_containerd_runs_on_both_workers_with_the_settings_their_facts_decide(cluster: LocalCluster) -> None:
    nodes = shells(cluster.state_dir)
    for name, overlay in (("worker-0", False), ("worker-1", True)):
        assert nodes[name].run(f"systemctl is-active {' '.join(WORKER_UNITS)}").stdout.split() == ["active"] * 3
        facts = NodeFacts.parse(nodes[name].run(FACTS_COMMAND).stdout)
        assert facts == bed_facts(containerd_on_overlay=overlay)
        config = nodes[name].run(f"cat {CONTAINERD_CONFIG}").stdout
        assert ('root = "/run/containerd-root"' in config) == overlay
        assert ("restrict_oom_score_adj = true" in config) == (not facts.lower_oom)
    assert "failCgroupV1: false" in nodes["worker-0"].run("cat /var/lib/kubelet/kubelet-config.yaml").stdout


def test_the_kubelets_kernel_settings_were_set_on_the_host_before_the_nodes_booted(cluster: LocalCluster) -> None:
    host = HostTunables()
    assert host.held_by(cluster.prefix) and host.to_change() == {}
    for name in ("worker-0", "worker-1"):
        seen = shells(cluster.state_dir)[name].run("sysctl -n " + " ".join(KUBELET_TUNABLES)).stdout.split()
        assert seen == list(KUBELET_TUNABLES.values())


def test_pods_get_addresses_in_their_workers_pod_cidr_and_reach_each_other(cluster: LocalCluster) -> None:
    topo = artifacts_of(cluster.config_path, cluster.state_dir).topo
    nodes = shells(cluster.state_dir)
    pods = {w.name: start_web_pod(nodes[w.name]) for w in topo.workers}
    for worker in topo.workers:
        assert pod_cidr_contains(worker.pod_cidr, pods[worker.name].ip), (worker.pod_cidr, pods[worker.name].ip)
    w0, w1 = pods["worker-0"], pods["worker-1"]
    assert w0.fetch(f"http://{w1.ip}/") == w1.fetch(f"http://{w0.ip}/") == "served by a khwtui test pod\n"
    assert " 0% packet loss" in w1.exec(f"/bin/busybox ping -c 1 -W 5 {w0.ip}").stdout


def expected_files(cluster: LocalCluster, release_mirror: dict) -> dict[str, list]:
    """node -> every file the etcd, control-plane, workers and routes stages must have placed there,
    rendered here from the cluster's own state and the facts of this test bed."""
    a = artifacts_of(cluster.config_path, cluster.state_dir)
    wanted: dict[str, list] = {}
    for node in a.topo.nodes:
        files = routes_files(a.topo, node)
        if node.role == "controller":
            files += etcd_files(a, node) + control_plane_files(a, node)
        if node.role == "worker":
            files += worker_files(a, node, bed_facts(containerd_on_overlay=node.name == "worker-1"))
            files += release_files(release_mirror, K8S_VERSION)
        wanted[node.name] = files
    return wanted


def test_every_file_on_every_node_equals_its_rendered_file_with_owner_and_mode(cluster: LocalCluster, release_mirror: dict) -> None:
    nodes = shells(cluster.state_dir)
    recorded = cluster.state()["nodes"]
    for name, files in expected_files(cluster, release_mirror).items():
        assert_placed_as_rendered(nodes[name], files)
        record = recorded[name]["files"]
        assert {f.path for f in files} <= set(record)
        seen = stat_files(nodes[name], sorted(record))
        assert all(seen[p] == f"{r['sha256']} {r['mode']:o} {r['owner']} {r['group']}" for p, r in record.items()), name
    assert ROUTES_UNIT in recorded["lb"]["units"] and set(WORKER_UNITS) <= set(recorded["worker-0"]["units"])


def test_a_noop_rerun_rewrites_nothing_and_restarts_nothing(cluster: LocalCluster) -> None:
    nodes = shells(cluster.state_dir)
    before = {n: unit_starts(nodes[n], [*WORKER_UNITS, ROUTES_UNIT]) for n in ("worker-0", "worker-1")}
    again = cluster.khwtui("up", "--auto", "--only", "frontend,workers,routes", "--json")
    assert again.returncode == 3, again.stdout[-3000:]
    commands = [e["lines"][0] for e in map(json.loads, again.stdout.splitlines()) if e["kind"] == "log" and e["stream"] == "cmd"]
    assert [c for c in commands if c.startswith("put ") or "restart" in c or "daemon-reload" in c] == []
    assert len(commands) > 0
    assert {n: unit_starts(nodes[n], [*WORKER_UNITS, ROUTES_UNIT]) for n in ("worker-0", "worker-1")} == before


def kill_node(cluster: LocalCluster, name: str) -> None:
    """Power the node off the hard way (SIGKILL to its init) and wait until its machine is gone."""
    pid = shells(cluster.state_dir)[name].init_pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"{name} did not stop"
        time.sleep(0.1)


def test_pod_routes_deleted_by_hand_come_back_from_the_nodes_own_config_when_it_restarts(cluster: LocalCluster) -> None:
    topo = artifacts_of(cluster.config_path, cluster.state_dir).topo
    wanted = {(r.destination, r.via) for r in topo.pod_routes() if r.node == "worker-0"}
    node = shells(cluster.state_dir)["worker-0"]
    assert wanted and wanted <= routes_of(node)
    for destination, via in wanted:
        node.run(f"ip route del {destination} via {via}")
    assert not wanted & routes_of(node)
    config_before = stat_files(node, [CONTAINERD_CONFIG])
    kill_node(cluster, "worker-0")

    booted = cluster.khwtui("up", "--auto", "--only", "compute")  # boots the node again; no stage places anything
    assert booted.returncode == 0, booted.stdout + booted.stderr
    node = shells(cluster.state_dir)["worker-0"]
    assert wanted <= routes_of(node)
    assert node.run(f"systemctl is-active {' '.join(WORKER_UNITS)} {ROUTES_UNIT}").stdout.split() == ["active"] * 4
    assert stat_files(node, [CONTAINERD_CONFIG]) == config_before
    pod = start_web_pod(node, "web-after-restart")
    assert pod_cidr_contains(topo.node("worker-0").pod_cidr or "", pod.ip)
    other_pod = pod_ip(shells(cluster.state_dir)["worker-1"], "web")  # started before the restart
    assert pod.fetch(f"http://{other_pod}/") == "served by a khwtui test pod\n"


@dataclass(frozen=True)
class Mutation:
    """A template edit that makes one program refuse to start on these nodes, and its own line."""

    template: str
    old: str
    new: str
    refusal: str


MUTATIONS = {
    "a kubelet flag the minor removed": Mutation(
        "kubelet.service.j2", "  --config={{ config }} \\\n",
        "  --config={{ config }} \\\n  --pod-infra-container-image=registry.k8s.io/pause:3.10.1 \\\n", REMOVED_FLAG),
    "kube-proxy setting the conntrack limit in the node's network namespace": Mutation(
        "kube-proxy-config.yaml.j2", "{%- if leave_conntrack_max %}", "{%- if false %}", CONNTRACK_REFUSED),
}


@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_a_program_that_refuses_to_start_fails_the_workers_stage_with_its_own_line(cluster: LocalCluster, tmp_path: Path, mutation: Mutation) -> None:
    """The mutation: khwtui run from a copy with one template changed (a kubelet unit passing
    --pod-infra-container-image, which 1.35 removed; a kube-proxy config without maxPerCore: 0);
    the stand-in refuses as the real program would and the stage says why, at once."""
    copy = tmp_path / "mutated"
    shutil.copytree(Path(__file__).parents[1] / "khwtui", copy / "khwtui", ignore=shutil.ignore_patterns("__pycache__"))
    template = copy / "khwtui" / "templates" / mutation.template
    text = template.read_text()
    assert mutation.old in text
    template.write_text(text.replace(mutation.old, mutation.new))
    for name in ("worker-0", "worker-1"):
        remove_pods(shells(cluster.state_dir)[name])
    first = {"PYTHONPATH": str(copy), "PYTHONSAFEPATH": "1"}  # the copy before the working folder's khwtui
    failed = cluster.khwtui("up", "--auto", "--only", "workers", env=first)
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert "does not stay up: " + mutation.refusal in failed.stdout
    assert mutation.refusal in failed.stdout.split("✖ workers · apply on ", 1)[1]

    fixed = cluster.khwtui("up", "--auto", "--only", "workers")  # the real templates again
    assert fixed.returncode == 3, fixed.stdout[-3000:]
