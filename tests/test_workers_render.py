"""Worker node files for every minor 1.34-1.37: the flags and config fields of each minor (required
ones present, removed ones absent), the settings decided from a node's facts, the stand-ins
accepting what khwtui renders and refusing each single mistake with one line, and the workers and
routes stages' decisions on simulated nodes."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from releasefake import simulate_release_install
from stagerun import ScriptedRemote, Simulated, in_turn, simulate
from standins import install
from standins.flags import MINORS, PROGRAMS
from test_standins import free_port, replace, stop, unit_flags, wait_line

from khwtui.artifacts.encryption import load_or_create_key
from khwtui.artifacts.nodefiles import Artifacts
from khwtui.artifacts.pki import Pki
from khwtui.artifacts.render import NodeFile
from khwtui.artifacts.workers_files import (
    CNI_BRIDGE,
    CNI_LOOPBACK,
    CONTAINERD_CONFIG,
    FACTS_COMMAND,
    KUBE_PROXY_CONFIG,
    KUBELET_CONFIG,
    MODULES_FILE,
    PAUSE_IMAGE,
    ROUTES_UNIT,
    SYSCTL_FILE,
    NodeFacts,
    containerd_config,
    containerd_unit,
    kernel_files,
    kube_proxy_config,
    kube_proxy_unit,
    kubelet_config,
    kubelet_unit,
    restart_inputs,
    routes_files,
    unit_path,
    worker_files,
)
from khwtui.core.events import FAILED, PASSED, UNVERIFIED
from khwtui.model import config
from khwtui.model.topology import Topology
from khwtui.stages import workers as workers_stage
from khwtui.stages.routes import RoutesStage, missing_routes
from khwtui.stages.workers import WorkersStage, ready_outcome, show_blocks
from khwtui.transport.remote import RunResult

LOCAL = {
    "cluster": {"name": "wk-test"},
    "provider": {"kind": "local"},
    "topology": {"controllers": 1, "workers": 3},
    "network": {"node_cidr": "192.168.60.0/24", "cluster_cidr": "172.21.0.0/16", "service_cidr": "10.96.0.0/20",
                "dns_ip": "10.96.0.10", "cluster_domain": "corp.internal"},
    "pki": {"key_type": "ecdsa-p256"},
}
# A node on this test machine (docs/UPSTREAM.md "systemd-nspawn nodes"): cgroup v1, no modules, no CAP_SYS_RESOURCE,
# and its own network namespace, where nf_conntrack_max is read-only.
THIS_HOST = NodeFacts(cgroup_v2=False, modules=False, lower_oom=False, containerd_on_overlay=False, resolved=False,
                      conntrack_max_writable=False)
CLOUD_VM = NodeFacts(cgroup_v2=True, modules=True, lower_oom=True, containerd_on_overlay=False, resolved=True)


def topology(minor: int = 36, workers: int = 3, kind: str = "local") -> Topology:
    raw = {**LOCAL, "cluster": {"name": "wk-test", "kubernetes_version": f"1.{minor}.2"}, "versions": {"crictl": f"1.{minor}.0"},
           "topology": {"controllers": 1, "workers": workers}, "provider": {"kind": kind}}
    return Topology(config.from_dict(raw))


def flags_of(unit: str) -> dict[str, str]:
    return dict(flag[2:].split("=", 1) for flag in unit_flags(unit))


# --- per minor: flags and fields ------------------------------------------------------------------


@pytest.mark.parametrize("minor", MINORS)
def test_the_kubelet_unit_passes_only_flags_of_the_minor_and_every_required_one(minor: int) -> None:
    topo = topology(minor)
    node = topo.workers[1]
    flags = flags_of(kubelet_unit(node))
    kubelet = PROGRAMS["kubelet"]
    assert flags == {"config": KUBELET_CONFIG, "kubeconfig": "/var/lib/kubelet/kubeconfig",
                     "hostname-override": "worker-1", "node-ip": "192.168.60.21", "v": "2"}
    assert set(flags) <= set(kubelet.accepted(minor)) and not set(flags) & set(kubelet.removed(minor))
    assert set(kubelet.required) <= set(flags)
    assert flags_of(kube_proxy_unit()) == {"config": KUBE_PROXY_CONFIG}


@pytest.mark.parametrize("minor", MINORS)
@pytest.mark.parametrize("facts", [THIS_HOST, CLOUD_VM], ids=["cgroup-v1-host", "cgroup-v2-vm"])
def test_the_kubelet_config_holds_the_fields_of_the_minor_with_values_from_the_config(minor: int, facts: NodeFacts) -> None:
    topo = topology(minor)
    doc = yaml.safe_load(kubelet_config(topo, topo.workers[2], facts))
    kubelet = PROGRAMS["kubelet"]
    assert set(doc) <= set(kubelet.accepted_fields(minor)) and not set(doc) & set(kubelet.removed_fields(minor))
    assert set(kubelet.fields_required) <= set(doc)
    assert (doc["apiVersion"], doc["kind"]) == ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration")
    assert doc["clusterDNS"] == ["10.96.0.10"] and doc["clusterDomain"] == "corp.internal"
    assert doc["podCIDR"] == "172.21.2.0/24"
    assert doc["authentication"] == {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                                     "x509": {"clientCAFile": "/var/lib/kubernetes/ca.pem"}}
    assert doc["authorization"] == {"mode": "Webhook"}
    assert (doc["tlsCertFile"], doc["tlsPrivateKeyFile"]) == ("/var/lib/kubelet/worker-2.pem", "/var/lib/kubelet/worker-2-key.pem")
    assert doc["containerRuntimeEndpoint"] == "unix:///run/containerd/containerd.sock"
    assert doc["cgroupDriver"] == "systemd"


@pytest.mark.parametrize(("minor", "facts", "field"), [(34, THIS_HOST, None), (35, THIS_HOST, False), (37, THIS_HOST, False),
                                                       (35, CLOUD_VM, None), (37, CLOUD_VM, None)])
def test_fail_cgroup_v1_is_false_only_on_a_cgroup_v1_host_with_a_minor_that_refuses_v1(minor: int, facts: NodeFacts, field: bool | None) -> None:
    topo = topology(minor)
    assert yaml.safe_load(kubelet_config(topo, topo.workers[0], facts)).get("failCgroupV1") == field


def test_resolv_conf_is_systemd_resolveds_upstream_list_only_where_it_runs() -> None:
    topo = topology()
    assert yaml.safe_load(kubelet_config(topo, topo.workers[0], CLOUD_VM))["resolvConf"] == "/run/systemd/resolve/resolv.conf"
    assert yaml.safe_load(kubelet_config(topo, topo.workers[0], THIS_HOST))["resolvConf"] == "/etc/resolv.conf"


@pytest.mark.parametrize("minor", MINORS)
def test_the_kube_proxy_config_has_the_cluster_cidr_and_no_removed_field(minor: int) -> None:
    topo = topology(minor)
    doc = yaml.safe_load(kube_proxy_config(topo, topo.workers[0], CLOUD_VM))
    proxy = PROGRAMS["kube-proxy"]
    assert set(doc) <= set(proxy.accepted_fields(minor)) and set(proxy.fields_required) <= set(doc)
    assert not {"udpIdleTimeout", "resourceContainer"} & set(doc)
    assert doc == {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
                   "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig"}, "mode": "iptables",
                   "clusterCIDR": "172.21.0.0/16", "hostnameOverride": "worker-0"}


def test_kube_proxy_leaves_the_conntrack_limit_only_where_the_node_cannot_set_it() -> None:
    topo = topology()
    assert yaml.safe_load(kube_proxy_config(topo, topo.workers[0], THIS_HOST))["conntrack"] == {"maxPerCore": 0}
    assert "conntrack" not in yaml.safe_load(kube_proxy_config(topo, topo.workers[0], CLOUD_VM))


def test_a_machine_with_swap_still_runs_its_kubelet_and_pods_never_swap() -> None:
    topo = topology()
    doc = yaml.safe_load(kubelet_config(topo, topo.workers[0], CLOUD_VM))
    assert doc["failSwapOn"] is False and doc["memorySwap"] == {"swapBehavior": "NoSwap"}


def test_the_inventory_knows_what_each_minor_removed() -> None:
    """What makes the per-minor checks bite: the kubelet's lists really differ between minors."""
    kubelet = PROGRAMS["kubelet"]
    assert "pod-infra-container-image" in kubelet.accepted(34) and kubelet.removed(35)["pod-infra-container-image"] == 35
    assert kubelet.removed(34)["network-plugin"] == 24 and kubelet.removed(34)["container-runtime"] == 27
    assert "failCgroupV1" not in kubelet.spec(34)["true_by_default"] and "failCgroupV1" in kubelet.spec(35)["true_by_default"]
    assert PROGRAMS["kube-proxy"].removed_fields(34) == {"resourceContainer": 16, "udpIdleTimeout": 26}


# --- containerd and CNI, decided from facts -----------------------------------------------------------


PAUSE_BY_DIGEST = "registry.k8s.io/pause@sha256:278fb9dbcca9518083ad1e11276933a2e96f23de604a3a08cc3c80002767d24c"
RUNC = {"runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": "/usr/local/bin/runc", "SystemdCgroup": True}}


def test_containerd_1_reads_a_version_2_config_with_systemd_cgroups_and_the_pause_image_by_digest() -> None:
    doc = tomllib.loads(containerd_config("1.6.20", CLOUD_VM))
    assert set(doc) == {"version", "root", "state", "grpc", "plugins"} and set(doc["plugins"]) == {"io.containerd.grpc.v1.cri"}
    assert (doc["version"], doc["root"], doc["state"], doc["grpc"]) == (2, "/var/lib/containerd", "/run/containerd", {"address": "/run/containerd/containerd.sock"})
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri == {"sandbox_image": PAUSE_BY_DIGEST,
                   "containerd": {"snapshotter": "overlayfs", "default_runtime_name": "runc", "runtimes": {"runc": RUNC}},
                   "cni": {"bin_dir": "/opt/cni/bin", "conf_dir": "/etc/cni/net.d"}}
    assert PAUSE_IMAGE == PAUSE_BY_DIGEST


@pytest.mark.parametrize(("version", "cni_dirs"), [("2.0.7", {"bin_dir": "/opt/cni/bin"}), ("2.2.3", {"bin_dirs": ["/opt/cni/bin"]})])
def test_containerd_2_reads_a_version_3_config_with_the_2_x_plugin_ids(version: str, cni_dirs: dict) -> None:
    doc = tomllib.loads(containerd_config(version, CLOUD_VM))
    assert set(doc) == {"version", "root", "state", "grpc", "plugins"}
    assert (doc["version"], doc["root"], doc["state"], doc["grpc"]) == (3, "/var/lib/containerd", "/run/containerd", {"address": "/run/containerd/containerd.sock"})
    assert doc["plugins"] == {
        "io.containerd.cri.v1.images": {"snapshotter": "overlayfs", "pinned_images": {"sandbox": PAUSE_BY_DIGEST}},
        "io.containerd.cri.v1.runtime": {"containerd": {"default_runtime_name": "runc", "runtimes": {"runc": RUNC}},
                                         "cni": {**cni_dirs, "conf_dir": "/etc/cni/net.d"}},
    }


@pytest.mark.parametrize(("version", "section"), [("1.7.27", ("io.containerd.grpc.v1.cri",)), ("2.2.3", ("io.containerd.cri.v1.runtime",))])
def test_a_node_that_cannot_lower_oom_score_adj_gets_restrict_oom_score_adj(version: str, section: tuple[str]) -> None:
    assert tomllib.loads(containerd_config(version, THIS_HOST))["plugins"][section[0]]["restrict_oom_score_adj"] is True
    assert "restrict_oom_score_adj" not in tomllib.loads(containerd_config(version, CLOUD_VM))["plugins"][section[0]]


@pytest.mark.parametrize("version", ["1.6.20", "2.2.3"])
def test_containerd_data_moves_off_overlayfs(version: str) -> None:
    on_overlay = NodeFacts(**{**vars(THIS_HOST), "containerd_on_overlay": True})
    assert tomllib.loads(containerd_config(version, on_overlay))["root"] == "/run/containerd-root"
    assert tomllib.loads(containerd_config(version, THIS_HOST))["root"] == "/var/lib/containerd"


def test_modules_are_loaded_only_where_the_node_has_modules() -> None:
    assert "ExecStartPre=/sbin/modprobe overlay" in containerd_unit(CLOUD_VM)
    assert "modprobe" not in containerd_unit(THIS_HOST)
    assert [f.path for f in kernel_files(CLOUD_VM)] == [SYSCTL_FILE, MODULES_FILE]
    assert kernel_files(CLOUD_VM)[1].content.decode().splitlines()[1:] == ["overlay", "br_netfilter"]
    assert [f.path for f in kernel_files(THIS_HOST)] == [SYSCTL_FILE]
    sysctls = kernel_files(THIS_HOST)[0].content.decode()
    assert {line.replace(" ", "") for line in sysctls.splitlines() if "=" in line} == {
        "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1", "net.ipv4.ip_forward=1"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    topo = topology(35)
    folder = tmp_path_factory.mktemp("pki")
    pki = Pki(folder, topo.config)
    pki.ensure(topo)
    return Artifacts(topo, pki, load_or_create_key(folder))


def test_each_worker_gets_its_own_pod_cidr_in_a_cni_1_0_0_bridge(artifacts: Artifacts) -> None:
    for node in artifacts.topo.workers:
        files = {f.path: f for f in worker_files(artifacts, node, THIS_HOST)}
        bridge, loopback = json.loads(files[CNI_BRIDGE].content), json.loads(files[CNI_LOOPBACK].content)
        assert (bridge["cniVersion"], loopback["cniVersion"]) == ("1.0.0", "1.0.0")
        assert bridge["type"] == "bridge" and bridge["isGateway"] and bridge["ipMasq"]
        assert bridge["ipam"] == {"type": "host-local", "ranges": [[{"subnet": node.pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]}
        assert loopback["type"] == "loopback"


def test_credentials_are_private_and_a_unit_restarts_for_exactly_what_it_reads(artifacts: Artifacts) -> None:
    node = artifacts.topo.workers[0]
    files = {f.path: f for f in worker_files(artifacts, node, THIS_HOST)}
    for secret in ("/var/lib/kubelet/worker-0-key.pem", "/var/lib/kubelet/kubeconfig", "/var/lib/kube-proxy/kubeconfig"):
        assert files[secret].mode == 0o600
    assert all(f.owner == f.group == "root" for f in files.values())
    inputs = restart_inputs(node)
    assert inputs["containerd"] == {unit_path("containerd"), CONTAINERD_CONFIG, "/usr/local/bin/containerd"}
    assert inputs["kube-proxy"] == {unit_path("kube-proxy"), KUBE_PROXY_CONFIG, "/var/lib/kube-proxy/kubeconfig", "/usr/local/bin/kube-proxy"}
    assert inputs["kubelet"] >= {"/var/lib/kubelet/worker-0.pem", "/var/lib/kubelet/worker-0-key.pem", KUBELET_CONFIG}
    assert set().union(*inputs.values()) <= set(files) | {"/usr/local/bin/containerd", "/usr/local/bin/kubelet", "/usr/local/bin/kube-proxy"}


def test_node_facts_are_read_from_the_facts_command_and_a_missing_one_is_an_error() -> None:
    out = "cgroup=tmpfs\nmodules=no\nlower_oom=no\ncontainerd_fs=ext2/ext3\nresolved=no\nconntrack_max=fixed\n"
    assert NodeFacts.parse(out) == THIS_HOST
    changed = out.replace("tmpfs", "cgroup2fs").replace("ext2/ext3", "overlayfs").replace("fixed", "writable")
    assert NodeFacts.parse(changed) == NodeFacts(True, False, False, True, False, True)
    with pytest.raises(ValueError, match="lack lower_oom"):
        NodeFacts.parse(out.replace("lower_oom=no\n", ""))


# --- pod routes ----------------------------------------------------------------------------------------


def test_every_node_routes_to_every_other_workers_pod_cidr_in_a_unit_that_survives_restarts() -> None:
    topo = topology(workers=2)
    controller, w0, w1, lb = (topo.node(n) for n in ("controller-0", "worker-0", "worker-1", "lb"))
    unit = routes_files(topo, controller)[0]
    assert unit.path == unit_path(ROUTES_UNIT)
    lines = unit.content.decode().splitlines()
    assert [line for line in lines if line.startswith("ExecStart=")] == [
        "ExecStart=/sbin/ip route replace 172.21.0.0/24 via 192.168.60.20",
        "ExecStart=/sbin/ip route replace 172.21.1.0/24 via 192.168.60.21"]
    assert "WantedBy=multi-user.target" in lines and "RemainAfterExit=yes" in lines
    assert [line for line in routes_files(topo, w0)[0].content.decode().splitlines() if line.startswith("ExecStart=")] == [
        "ExecStart=/sbin/ip route replace 172.21.1.0/24 via 192.168.60.21"]
    assert routes_files(topo, lb) and routes_files(topo, w1)
    single = topology(workers=1)
    assert routes_files(single, single.workers[0]) == []


def test_missing_routes_reads_the_route_table() -> None:
    topo = topology(workers=3)
    wanted = [r for r in topo.pod_routes() if r.node == "worker-0"]
    table = "default via 192.168.60.1 dev eth0\n172.21.1.0/24 via 192.168.60.21 dev eth0\n172.21.2.0/24 via 192.168.60.99 dev eth0\n"
    assert [(r.destination, r.via) for r in missing_routes(table, wanted)] == [("172.21.2.0/24", "192.168.60.22")]


# --- the stand-ins accept what khwtui renders, and refuse one mistake at a time -------------------------


# What /proc says on a node of this machine before any kubelet ran: the kernel defaults the kubelet
# changes (three of its six tunables), the host's conntrack limit and no swap.
HOST_PROC = {"sys/vm/overcommit_memory": "0", "sys/vm/panic_on_oom": "0", "sys/kernel/panic": "1", "sys/kernel/panic_on_oops": "0",
             "sys/kernel/keys/root_maxkeys": "1000000", "sys/kernel/keys/root_maxbytes": "25000000",
             "sys/net/netfilter/nf_conntrack_max": "262144", "swaps": "Filename\tType\tSize\tUsed\tPriority\n"}
KUBELET_TUNABLES = {"sys/vm/overcommit_memory": "1", "sys/kernel/panic": "10", "sys/kernel/panic_on_oops": "1"}


def fake_proc(folder: Path, **changed: str) -> Path:
    """A copy of the /proc files the stand-ins read and write (KHWTUI_STANDIN_PROC), so a stand-in run
    here never changes this machine's kernel settings."""
    for name, text in {**HOST_PROC, **{k.replace("__", "/"): v for k, v in changed.items()}}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@dataclass
class Worker:
    """One worker's files under `root` (paths in the configs rooted too), a CRI socket that answers,
    the kubelet's and kube-proxy's rendered flags, and the /proc they see (`proc`, a copy)."""

    root: Path
    minor: int
    bin: dict[str, Path]
    flags: dict[str, list[str]]
    cri: socket.socket
    proc: Path

    def path(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    def run(self, program: str, flags: list[str], proc: Path | None = None, read_only_proc: bool = False,
            containerd: Path | None = None) -> subprocess.Popen:
        """The stand-in on `proc` (the worker's own copy by default), mounted read-only for it alone
        (in a private mount namespace) when `read_only_proc`; containerd's config is the worker's
        rendered one unless `containerd` names another."""
        folder = proc or self.proc
        argv = [sys.executable, str(self.bin[program]), *flags]
        if read_only_proc:
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-ec", 'mount --bind -o ro "$0" "$0"; exec "$@"', str(folder), *argv]
        env = {**os.environ, "KHWTUI_STANDIN_PROC": str(folder),
               "KHWTUI_STANDIN_CONTAINERD_CONFIG": str(containerd or self.path(CONTAINERD_CONFIG))}
        return subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)

    def outcome(self, program: str, flags: list[str] | None = None, proc: Path | None = None, read_only_proc: bool = False,
                containerd: Path | None = None) -> str:
        """The stand-in's first line; a stand-in that accepted is stopped (and must exit 0), one that
        refused must exit 1 after exactly that line."""
        proc = self.run(program, self.flags[program] if flags is None else flags, proc, read_only_proc, containerd)
        line = wait_line(proc)
        if line.startswith(f"{program} stand-in"):
            assert stop(proc) == 0
            return line
        rest = proc.communicate(timeout=60)[1]
        assert (proc.returncode, rest) == (1, ""), f"{line}\n{rest}"
        return line

    def config_with(self, program: str, path: str, change: Callable[[dict], None]) -> list[str]:
        """The program's flags with --config pointing at a changed copy of its config."""
        doc = yaml.safe_load(self.path(path).read_text())
        change(doc)
        copy = self.root / f"changed-{program}.yaml"
        copy.write_text(yaml.safe_dump(doc))
        return replace(self.flags[program], "config", str(copy))


def rooted_text(root: Path, text: str) -> str:
    return text.replace('"/', f'"{root}/').replace("unix:///", f"unix://{root}/")


def place_worker(root: Path, a: Artifacts, minor: int, facts: NodeFacts) -> Worker:
    node = a.topo.workers[0]
    for f in worker_files(a, node, facts):
        target = root / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        content = rooted_text(root, f.content.decode()) if f.path in (KUBELET_CONFIG, KUBE_PROXY_CONFIG) else f.content.decode()
        if f.path == KUBELET_CONFIG:  # its server on this machine: loopback and a port of its own
            content = content.replace('address: "0.0.0.0"', f'address: "127.0.0.1"\nport: {free_port()}')
        target.write_text(content)
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.53\n")
    socket_path = root / "run/containerd/containerd.sock"
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    cri = socket.socket(socket.AF_UNIX)
    cri.bind(str(socket_path))
    cri.listen(16)
    flags = {"kubelet": [f"--{k}={root}{v}" if v.startswith("/") else f"--{k}={v}" for k, v in flags_of(kubelet_unit(node)).items()],
             "kube-proxy": [f"--config={root}{KUBE_PROXY_CONFIG}"]}
    return Worker(root, minor, install(root / "bin", f"1.{minor}.3"), flags, cri, fake_proc(root / "proc"))


def worker_artifacts(folder: Path, minor: int) -> Artifacts:
    topo = topology(minor)
    pki = Pki(folder, topo.config)
    pki.ensure(topo)
    return Artifacts(topo, pki, load_or_create_key(folder))


@pytest.fixture(scope="module", params=MINORS, ids=[f"1.{m}" for m in MINORS])
def worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    root = tmp_path_factory.mktemp(f"w{request.param}")
    w = place_worker(root, worker_artifacts(root / "state", request.param), request.param, THIS_HOST)
    yield w
    w.cri.close()


def test_this_test_machine_is_the_cgroup_v1_host_the_facts_describe() -> None:
    assert not Path("/sys/fs/cgroup/cgroup.controllers").exists(), "the kubelet stand-in tests below assume a cgroup v1 host"


@pytest.mark.parametrize("program", ["kubelet", "kube-proxy"])
def test_the_rendered_worker_files_are_accepted_by_each_minor(worker: Worker, program: str) -> None:
    assert worker.outcome(program) == f"{program} stand-in v1.{worker.minor}.3: flags and files accepted"


MUTATION_MINORS = pytest.mark.parametrize("worker", [34, 37], indirect=True, ids=["1.34", "1.37"])


@pytest.mark.parametrize("worker", MINORS, indirect=True, ids=[f"1.{m}" for m in MINORS])
def test_a_flag_the_minor_removed_is_refused_naming_the_minor(worker: Worker) -> None:
    flag = "pod-infra-container-image" if worker.minor >= 35 else "network-plugin"
    line = worker.outcome("kubelet", [*worker.flags["kubelet"], f"--{flag}=x"])
    assert line == f"kubelet: unknown flag: --{flag} (removed in Kubernetes 1.{35 if worker.minor >= 35 else 24})"


@MUTATION_MINORS
def test_a_kubelet_without_its_kubeconfig_is_refused(worker: Worker) -> None:
    assert worker.outcome("kubelet", replace(worker.flags["kubelet"], "kubeconfig", None)) == "kubelet: missing required flag --kubeconfig"


@MUTATION_MINORS
@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d.update(clusterDNSs=["10.96.0.10"]), 'strict decoding error: unknown field "clusterDNSs"'),
    (lambda d: d.pop("clusterDNS"), "missing required field clusterDNS"),
    (lambda d: d.update(clusterDNS=["10.96.0.300"]), "clusterDNS: invalid value ['10.96.0.300']: not a list of IP addresses"),
    (lambda d: d.update(apiVersion="kubelet.config.k8s.io/v1alpha1"),
     'no kind "KubeletConfiguration" is registered for version "kubelet.config.k8s.io/v1alpha1"'),
])
def test_a_kubelet_config_mistake_is_refused_with_the_field(worker: Worker, change: Callable[[dict], None], problem: str) -> None:
    line = worker.outcome("kubelet", worker.config_with("kubelet", KUBELET_CONFIG, change))
    assert line.startswith("kubelet: --config=") and line.endswith(problem)


@MUTATION_MINORS
def test_a_serving_certificate_that_does_not_fit_its_key_is_refused(worker: Worker) -> None:
    ca = str(worker.path("/var/lib/kubernetes/ca.pem"))
    line = worker.outcome("kubelet", worker.config_with("kubelet", KUBELET_CONFIG, lambda d: d.update(tlsCertFile=ca)))
    assert f": tlsCertFile={ca} does not match " in line and "KEY_VALUES_MISMATCH" in line


@pytest.mark.parametrize("worker", [35, 37], indirect=True, ids=["1.35", "1.37"])
def test_from_1_35_a_cgroup_v1_host_is_refused_unless_fail_cgroup_v1_is_false(worker: Worker) -> None:
    line = worker.outcome("kubelet", worker.config_with("kubelet", KUBELET_CONFIG, lambda d: d.pop("failCgroupV1")))
    assert line == "kubelet: failed to run Kubelet: kubelet is configured to not run on a host using cgroup v1. " \
                   "cgroup v1 support is unsupported and will be removed in a future release"


@pytest.mark.parametrize("worker", [34], indirect=True, ids=["1.34"])
def test_1_34_runs_on_cgroup_v1_without_fail_cgroup_v1(worker: Worker) -> None:
    assert "failCgroupV1" not in worker.path(KUBELET_CONFIG).read_text()
    assert worker.outcome("kubelet").endswith("flags and files accepted")


@MUTATION_MINORS
def test_a_kubelet_whose_container_runtime_does_not_answer_is_refused(worker: Worker) -> None:
    gone = worker.root / "run/nothing.sock"
    line = worker.outcome("kubelet", worker.config_with("kubelet", KUBELET_CONFIG, lambda d: d.update(containerRuntimeEndpoint=f"unix://{gone}")))
    assert line == f'kubelet: failed to run Kubelet: validate service connection: validate CRI v1 runtime API for endpoint "unix://{gone}": ' \
                   "connect: No such file or directory"


def cgroup_driver_refusal(kubelet: str, containerd: str, path: Path) -> str:
    return (f'kubelet: cgroupDriver "{kubelet}" differs from containerd\'s "{containerd}" (SystemdCgroup of its default runtime in {path}), '
            "and containerd 1.x has no CRI RuntimeConfig to tell the kubelet: every pod would fail in runc; set the same driver on both sides")


@MUTATION_MINORS
def test_with_containerd_1_the_kubelets_cgroup_driver_must_be_containerds_and_containerd_2_tells_it(worker: Worker, tmp_path: Path) -> None:
    """Debian's containerd 1.6 (the test beds) cannot answer the CRI RuntimeConfig call, so the kubelet
    uses its own cgroupDriver (cgroupfs when unset); containerd 2.x answers it and the kubelet follows."""
    debian = tmp_path / "containerd-1.6.toml"
    debian.write_text(containerd_config("1.6.20", THIS_HOST))
    assert worker.outcome("kubelet", containerd=debian).endswith("flags and files accepted")  # as khwtui renders both
    cgroupfs = worker.config_with("kubelet", KUBELET_CONFIG, lambda d: d.update(cgroupDriver="cgroupfs"))
    assert worker.outcome("kubelet", cgroupfs, containerd=debian) == cgroup_driver_refusal("cgroupfs", "systemd", debian)
    unset = worker.config_with("kubelet", KUBELET_CONFIG, lambda d: d.pop("cgroupDriver"))
    assert worker.outcome("kubelet", unset, containerd=debian) == cgroup_driver_refusal("cgroupfs", "systemd", debian)
    plain = tmp_path / "containerd-1.6-cgroupfs.toml"
    plain.write_text(debian.read_text().replace("SystemdCgroup = true", "SystemdCgroup = false"))
    assert worker.outcome("kubelet", containerd=plain) == cgroup_driver_refusal("systemd", "cgroupfs", plain)
    assert tomllib.loads(worker.path(CONTAINERD_CONFIG).read_text())["version"] == 3  # the worker's own: containerd 2.2
    assert worker.outcome("kubelet", cgroupfs).endswith("flags and files accepted")


@MUTATION_MINORS
def test_the_kubelet_sets_the_kernel_tunables_it_needs_where_it_can(worker: Worker, tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    assert worker.outcome("kubelet", proc=proc).endswith("flags and files accepted")
    assert {name: (proc / name).read_text() for name in KUBELET_TUNABLES} == KUBELET_TUNABLES


@MUTATION_MINORS
def test_a_kubelet_on_a_node_whose_kernel_tunables_are_read_only_and_unset_exits_with_the_kubelets_error(worker: Worker, tmp_path: Path) -> None:
    line = worker.outcome("kubelet", proc=fake_proc(tmp_path), read_only_proc=True)
    assert line == 'kubelet: "Failed to start ContainerManager" err="[' + ", ".join(
        f"open /proc/{name}: read-only file system" for name in sorted(KUBELET_TUNABLES, key=lambda n: n.removeprefix("sys/"))) + ']"'


@MUTATION_MINORS
def test_a_kubelet_on_read_only_tunables_that_already_hold_its_values_starts(worker: Worker, tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, **{name.replace("/", "__"): value for name, value in KUBELET_TUNABLES.items()})
    assert worker.outcome("kubelet", proc=proc, read_only_proc=True).endswith("flags and files accepted")


@MUTATION_MINORS
def test_protect_kernel_defaults_refuses_tunables_it_would_otherwise_set(worker: Worker, tmp_path: Path) -> None:
    flags = worker.config_with("kubelet", KUBELET_CONFIG, lambda d: d.update(protectKernelDefaults=True))
    line = worker.outcome("kubelet", flags, proc=fake_proc(tmp_path, sys__kernel__panic="10", sys__kernel__panic_on_oops="1"))
    assert line == 'kubelet: "Failed to start ContainerManager" err="invalid kernel flag: vm/overcommit_memory, expected value: 1, actual value: 0"'


@MUTATION_MINORS
def test_swap_stops_the_kubelet_only_while_fail_swap_on_holds(worker: Worker, tmp_path: Path) -> None:
    swap = "/swapfile                               file\t\t1048572\t\t0\t\t-2"
    proc = fake_proc(tmp_path, swaps=HOST_PROC["swaps"] + swap + "\n")
    assert worker.outcome("kubelet", proc=proc).endswith("flags and files accepted")  # failSwapOn: false, as rendered
    line = worker.outcome("kubelet", worker.config_with("kubelet", KUBELET_CONFIG, lambda d: d.pop("failSwapOn")), proc=proc)
    assert line == "kubelet: failed to run Kubelet: running with swap on is not supported, please disable swap or set " \
                   f"--fail-swap-on flag to false. /proc/swaps contained: {[swap]!r}"


@MUTATION_MINORS
def test_kube_proxy_exits_where_it_cannot_set_the_conntrack_limit_unless_told_to_leave_it(worker: Worker, tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    assert worker.outcome("kube-proxy", proc=proc, read_only_proc=True).endswith("flags and files accepted")  # maxPerCore: 0
    flags = worker.config_with("kube-proxy", KUBE_PROXY_CONFIG, lambda d: d.pop("conntrack"))
    assert worker.outcome("kube-proxy", flags, proc=proc, read_only_proc=True) == \
        'kube-proxy: "Error running ProxyServer" err="open /proc/sys/net/netfilter/nf_conntrack_max: read-only file system"'
    assert worker.outcome("kube-proxy", flags, proc=proc).endswith("flags and files accepted")
    assert (proc / "sys/net/netfilter/nf_conntrack_max").read_text() == str(max(32768 * (os.cpu_count() or 1), 131072))


@MUTATION_MINORS
@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d.update(udpIdleTimeout="250ms"), 'strict decoding error: unknown field "udpIdleTimeout" (removed in Kubernetes 1.26)'),
    (lambda d: d.pop("clusterCIDR"), "missing required field clusterCIDR"),
    (lambda d: d.update(mode="userspace"), "mode: invalid value 'userspace': not iptables, ipvs, nftables or blank"),
    (lambda d: d["clientConnection"].update(kubeconfig="/nonexistent/kubeconfig"), "/nonexistent/kubeconfig: No such file or directory"),
])
def test_a_kube_proxy_config_mistake_is_refused_with_the_field(worker: Worker, change: Callable[[dict], None], problem: str) -> None:
    line = worker.outcome("kube-proxy", worker.config_with("kube-proxy", KUBE_PROXY_CONFIG, change))
    assert line.startswith("kube-proxy: --config=") and line.endswith(problem)


# --- the stages on scripted nodes (the real runs go over SSH to nspawn nodes) -----------------------------


@dataclass
class ScriptedWorker:
    """A node's programs as the workers and routes stages hear them: its facts, the units' states
    per poll (the last repeats), the kubelet's journal and the route table."""

    facts: str
    unit_states: list[dict[str, tuple[str, str, str]]] = field(default_factory=lambda: [{"kubelet": ("active", "running", "0")}])
    routes: str = ""

    def script(self, remote: ScriptedRemote, node: str) -> None:
        remote.answer_with(f"^{re.escape(FACTS_COMMAND)}$", lambda command: RunResult(0, self.facts, ""), node=node)
        remote.answer_with(r"^systemctl show ", self.show, node=node)
        remote.answer(r"^journalctl ", "kubelet: unknown flag: --network-plugin (removed in Kubernetes 1.24)\n", node=node)
        remote.answer_with(r"^ip -4 route show$", lambda command: RunResult(0, self.routes, ""), node=node)

    def show(self, command: str) -> RunResult:
        now = in_turn(self.unit_states)
        blocks = []
        for unit in ("containerd", "kubelet", "kube-proxy"):
            active, sub, restarts = now.get(unit, ("active", "running", "0"))
            blocks.append(f"Id={unit}.service\nActiveState={active}\nSubState={sub}\nNRestarts={restarts}\nMainPID=7\n")
        return RunResult(0, "\n".join(blocks), "")


def release(folder: Path, crictl: bool) -> dict:
    """file:// release files for every worker component, with pinned sums ([binaries] of a config)."""
    import hashlib

    def tgz(members: list[str]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as archive:
            for name in members:
                info = tarfile.TarInfo(name)
                data = f"{name} release".encode()
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return out.getvalue()

    files = {"containerd.tgz": tgz(["bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr", "bin/containerd-stress"]),
             "cni.tgz": tgz(["./bridge", "./host-local", "./loopback", "./vlan"]), "runc": b"runc release",
             "kubelet": b"kubelet release", "kube-proxy": b"kube-proxy release", "crictl.tgz": tgz(["crictl"])}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    urls = {"containerd": f"file://{folder}/containerd.tgz", "cni_plugins": f"file://{folder}/cni.tgz", "runc": f"file://{folder}/runc",
            "kubernetes": f"file://{folder}/{{name}}", "crictl": f"file://{folder}/crictl.tgz"}
    return {"versions": {"containerd": "1.7.2", "runc": "1.1.5", "cni_plugins": "1.1.1", "crictl": "1.35.0" if crictl else ""},
            "binaries": {"urls": urls, "sha256": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}}


def simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, crictl: bool = False, kind: str = "local",
              workers: int = 1, stage: str = "workers") -> Simulated[ScriptedWorker]:
    """`stage` on one controller and `workers` scripted workers; the release files are file:// with pinned sums."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    simulate_release_install(monkeypatch)
    (tmp_path / "release").mkdir(exist_ok=True)
    raw = {**LOCAL, "cluster": {"name": "wk-test", "kubernetes_version": "1.35.2"}, "topology": {"controllers": 1, "workers": workers},
           "provider": {"kind": kind}, **release(tmp_path / "release", crictl)}
    facts = "cgroup=tmpfs\nmodules=no\nlower_oom=no\ncontainerd_fs=ext2/ext3\nresolved=no\nconntrack_max=fixed\n"
    return simulate(tmp_path, raw, stage, {node.name: ScriptedWorker(facts) for node in Topology(config.from_dict(raw)).nodes})


class FakeApi:
    def __init__(self, reason: str | None, node: dict | None) -> None:
        self.reason, self.node = reason, node

    async def unserved(self, group_version: str, resource: str) -> str | None:
        return self.reason

    async def get(self, path: str) -> dict | None:
        return self.node


def answering(monkeypatch: pytest.MonkeyPatch, reason: str | None, node: dict | None = None) -> None:
    monkeypatch.setattr(workers_stage, "admin_api", lambda run: FakeApi(reason, node))


NO_NODES = "the API server serves v1 without nodes (its discovery lists nothing)"
READY = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}]}}


async def test_the_stage_installs_then_restarts_only_units_whose_inputs_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = simulated(tmp_path, monkeypatch)
    answering(monkeypatch, NO_NODES)
    stage, run, files = WorkersStage(), sim.run, sim.files("worker-0")
    await stage.apply(run)
    assert files["/usr/local/bin/kubelet"] == NodeFile("/usr/local/bin/kubelet", b"kubelet release", 0o755)
    assert files["/opt/cni/bin/bridge"].content == b"./bridge release" and "/opt/cni/bin/vlan" not in files
    assert "/usr/local/bin/crictl" not in files  # versions.crictl = ""
    assert sim.changes("worker-0") == ["systemctl enable containerd kubelet kube-proxy", "systemctl daemon-reload", "systemctl restart containerd",
                                       "systemctl restart kubelet", "systemctl restart kube-proxy"]
    assert run.state.nodes["worker-0"].units == ["containerd", "kubelet", "kube-proxy"]
    run.settle_restarts()  # what the engine does once the stage's check passed

    await stage.apply(run)
    assert sim.changes("worker-0") == ["systemctl enable containerd kubelet kube-proxy", "systemctl start containerd", "systemctl start kubelet",
                                       "systemctl start kube-proxy"]
    files[KUBE_PROXY_CONFIG] = NodeFile(KUBE_PROXY_CONFIG, b"edited by hand", 0o644)
    await stage.apply(run)
    changes = sim.changes("worker-0")
    assert changes[-1] == "systemctl restart kube-proxy" and "systemctl restart kubelet" not in changes


async def test_crictl_is_installed_when_its_version_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = simulated(tmp_path, monkeypatch, crictl=True)
    answering(monkeypatch, NO_NODES)
    await WorkersStage().apply(sim.run)
    assert sim.files("worker-0")["/usr/local/bin/crictl"] == NodeFile("/usr/local/bin/crictl", b"crictl release", 0o755)


async def test_a_kubelet_that_restarts_fails_the_stage_at_once_with_its_own_last_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = simulated(tmp_path, monkeypatch)
    answering(monkeypatch, NO_NODES)
    sim.nodes["worker-0"].unit_states = [{"kubelet": ("active", "running", "0")}, {"kubelet": ("activating", "auto-restart", "1")}]
    with pytest.raises(Exception, match="kubelet on worker-0 does not stay up: kubelet: unknown flag: --network-plugin") as failure:
        await WorkersStage().apply(sim.run)
    assert failure.value.host == "worker-0"  # type: ignore[attr-defined]
    assert len(sim.sent("worker-0", "systemctl show ")) == 2


@pytest.mark.parametrize(("reason", "node", "result", "evidence"), [
    (NO_NODES, None, UNVERIFIED, f"{NO_NODES}, so whether worker-0 is Ready cannot be read there"),
    (None, READY, PASSED, "Ready=True (KubeletReady: kubelet is posting ready status)"),
    (None, None, FAILED, "worker-0 has not registered with the API server"),
    (None, {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "cni not ready"}]}},
     FAILED, "Ready=False (KubeletNotReady: cni not ready)"),
])
async def test_check_reports_ready_as_the_api_server_says_or_unverified_from_its_discovery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reason: str | None, node: dict | None, result: str, evidence: str) -> None:
    sim = simulated(tmp_path, monkeypatch)
    answering(monkeypatch, reason, node)
    ready = [o for o in await WorkersStage().check(sim.run) if o.check == "node Ready"]
    assert [(o.node, o.result, o.evidence) for o in ready] == [("worker-0", result, evidence)]


def test_ready_outcome_needs_a_ready_condition() -> None:
    assert ready_outcome("worker-0", {"status": {"conditions": []}}).evidence == "worker-0 reports no Ready condition yet"
    assert show_blocks("Id=a.service\nActiveState=active\n\nId=b.service\nActiveState=failed\n") == {
        "a": {"Id": "a.service", "ActiveState": "active"}, "b": {"Id": "b.service", "ActiveState": "failed"}}


async def test_routes_are_placed_enabled_and_restarted_where_they_are_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = simulated(tmp_path, monkeypatch, workers=2, stage="routes")
    stage, run = RoutesStage(), sim.run
    assert {o.result for o in await stage.check(run)} == {FAILED}
    sim.changes("worker-0")  # the check's queries
    await stage.apply(run)
    assert sim.changes("worker-0") == [f"systemctl enable {ROUTES_UNIT}.service", "systemctl daemon-reload", f"systemctl restart {ROUTES_UNIT}"]
    run.settle_restarts()  # what the engine does once the stage's check passed
    for name, node in sim.nodes.items():
        node.routes = "".join(f"{r.destination} via {r.via} dev eth0\n" for r in run.topo.pod_routes() if r.node == name)
    await stage.apply(run)
    assert sim.changes("worker-0") == [f"systemctl enable {ROUTES_UNIT}.service", f"systemctl start {ROUTES_UNIT}"]
    assert {o.result for o in await stage.check(run)} == {PASSED}
    sim.changes("worker-0")
    sim.nodes["worker-0"].routes = ""  # deleted by hand: restarted, though no file changed
    await stage.apply(run)
    assert sim.changes("worker-0") == [f"systemctl enable {ROUTES_UNIT}.service", f"systemctl restart {ROUTES_UNIT}.service",
                                       f"systemctl start {ROUTES_UNIT}"]


class CloudRoutes:
    """The cloud routes part of a provider: two routes missing until ensured."""

    def __init__(self) -> None:
        self.missing = ["route kthw-route-10-200-0-0-24 does not exist", "route kthw-route-10-200-1-0-24 does not exist"]

    async def ensure_routes(self, log: Callable[[str], None]) -> None:
        self.missing = []
        log("2 routes")

    async def routes_problems(self) -> list[str]:
        return self.missing


async def test_on_gcp_the_routes_are_the_providers_and_the_check_reads_them_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = simulated(tmp_path, monkeypatch, kind="gcp", workers=2, stage="routes")
    provider = sim.run.provider = CloudRoutes()
    stage, run = RoutesStage(), sim.run
    assert [(o.result, o.evidence) for o in await stage.check(run)] == [(FAILED, "\n".join(provider.missing))]
    await stage.apply(run)
    assert [(o.result, o.evidence) for o in await stage.check(run)] == [(PASSED, "172.21.0.0/24 via 192.168.60.20, 172.21.1.0/24 via 192.168.60.21")]
    provider.missing = ["route kthw-route-10-200-1-0-24 does not exist"]  # deleted by hand: status sees it
    assert [(o.result, o.evidence) for o in await stage.probe(run)] == [(FAILED, "route kthw-route-10-200-1-0-24 does not exist")]
    assert sim.remote.sent == []  # nothing ran on a node
