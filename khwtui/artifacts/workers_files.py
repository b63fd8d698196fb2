"""The workers' node files: containerd, runc, CNI, kubelet, kube-proxy, kernel settings, pod routes.

KTHW Lab 09 (current edition's formats) with what the current edition dropped put back
(clusterDNS, clusterDomain, podCIDR). Settings only some hosts need are decided from NodeFacts,
read on the node itself (FACTS_COMMAND), never from the provider's name: cgroup v1, kernel
modules to load, whether oom_score_adj can be lowered, whether containerd's data directory is on
overlayfs, whether systemd-resolved runs, and whether the conntrack table's size can be set from
the node's network namespace. The same facts always render the same bytes. containerd's config
schema follows its configured major version (2 for 1.x, 3 for 2.x).
"""

from __future__ import annotations

from dataclasses import dataclass

from khwtui.artifacts.nodefiles import (
    KUBE_PROXY_DIR,
    KUBELET_DIR,
    KUBERNETES_DIR,
    Artifacts,
    worker_secret_files,
)
from khwtui.artifacts.render import NodeFile, render
from khwtui.model.config import version_tuple
from khwtui.model.topology import Node, Route, Topology

BIN_DIR = "/usr/local/bin"
UNIT_DIR = "/etc/systemd/system"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_ROOT = "/var/lib/containerd"
CONTAINERD_TMPFS_ROOT = "/run/containerd-root"  # where /var/lib/containerd is on overlayfs
CONTAINERD_STATE = "/run/containerd"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"
CNI_BRIDGE = f"{CNI_CONF_DIR}/10-bridge.conf"
CNI_LOOPBACK = f"{CNI_CONF_DIR}/99-loopback.conf"
KUBELET_CONFIG = f"{KUBELET_DIR}/kubelet-config.yaml"
KUBELET_KUBECONFIG = f"{KUBELET_DIR}/kubeconfig"
KUBE_PROXY_CONFIG = f"{KUBE_PROXY_DIR}/kube-proxy-config.yaml"
KUBE_PROXY_KUBECONFIG = f"{KUBE_PROXY_DIR}/kubeconfig"
CA_FILE = f"{KUBERNETES_DIR}/ca.pem"
SYSCTL_FILE = "/etc/sysctl.d/kubernetes.conf"
MODULES_FILE = "/etc/modules-load.d/kubernetes.conf"
MODULES = ("overlay", "br_netfilter")
RESOLVED_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
HOST_RESOLV_CONF = "/etc/resolv.conf"
# pause 3.10.1 by digest alone: containerd pins the sandbox image it names (never garbage-collected),
# and a reference with both tag and digest is not the name it stores the image under.
PAUSE_IMAGE = "registry.k8s.io/pause@sha256:278fb9dbcca9518083ad1e11276933a2e96f23de604a3a08cc3c80002767d24c"
CNI_BIN_DIRS_FROM = (2, 1)  # containerd 2.1 replaced the CRI plugin's cni bin_dir with bin_dirs
FAIL_CGROUP_V1_FROM = 35  # the first minor whose kubelet refuses cgroup v1 by default (KEP-5573)
UNITS = ("containerd", "kubelet", "kube-proxy")
ROUTES_UNIT = "khwtui-pod-routes"
OS_PACKAGES = ("socat", "conntrack", "ipset", "iptables")  # KTHW Lab 09; iptables: kube-proxy, CNI ipMasq

# Release files: component -> {name in the release: path on the node}. CNI: only the plugins the
# two configs use; the kubernetes component's files are fetched by name.
CONTAINERD_FILES = {name: f"{BIN_DIR}/{name}" for name in ("containerd", "containerd-shim-runc-v2", "ctr")}
RUNC_BINARY = f"{BIN_DIR}/runc"
CNI_FILES = {name: f"{CNI_BIN_DIR}/{name}" for name in ("bridge", "host-local", "loopback")}
CRICTL_FILES = {"crictl": f"{BIN_DIR}/crictl"}
KUBERNETES_FILES = {name: f"{BIN_DIR}/{name}" for name in ("kubelet", "kube-proxy")}

# One command, run as root, that prints the facts as key=value lines (NodeFacts.parse reads them).
# containerd's folder is judged where it is, or where it would be made when it is not there yet.
FACTS_COMMAND = r"""d=/var/lib/containerd; [ -e "$d" ] || d=/var/lib
echo "cgroup=$(stat -fc %T /sys/fs/cgroup)"
if [ -d "/lib/modules/$(uname -r)" ]; then echo modules=yes; else echo modules=no; fi
if sh -c 'echo -999 >/proc/self/oom_score_adj' 2>/dev/null; then echo lower_oom=yes; else echo lower_oom=no; fi
echo "containerd_fs=$(stat -fc %T "$d")"
if [ -s /run/systemd/resolve/resolv.conf ]; then echo resolved=yes; else echo resolved=no; fi
if [ -w /proc/sys/net/netfilter/nf_conntrack_max ]; then echo conntrack_max=writable; else echo conntrack_max=fixed; fi"""


@dataclass(frozen=True)
class NodeFacts:
    """What a worker's host is like, as read on it."""

    cgroup_v2: bool  # /sys/fs/cgroup is the unified hierarchy
    modules: bool  # /lib/modules/<release> exists: modules can (and must) be loaded
    lower_oom: bool  # root may lower oom_score_adj (CAP_SYS_RESOURCE)
    containerd_on_overlay: bool  # containerd's data directory would be on overlayfs
    resolved: bool  # systemd-resolved writes the upstream resolv.conf
    conntrack_max_writable: bool = True  # false in a network namespace of Linux 5.12+ (a local node)

    @classmethod
    def parse(cls, text: str) -> NodeFacts:
        """From FACTS_COMMAND's output; a missing line is an error, not a guess."""
        seen = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        wanted = ("cgroup", "modules", "lower_oom", "containerd_fs", "resolved", "conntrack_max")
        missing = [key for key in wanted if key not in seen]
        if missing:
            raise ValueError(f"the node's facts lack {', '.join(missing)}: {text.strip()!r}")
        return cls(
            cgroup_v2=seen["cgroup"] == "cgroup2fs",
            modules=seen["modules"] == "yes",
            lower_oom=seen["lower_oom"] == "yes",
            containerd_on_overlay=seen["containerd_fs"] == "overlayfs",
            resolved=seen["resolved"] == "yes",
            conntrack_max_writable=seen["conntrack_max"] == "writable",
        )

    def describe(self) -> str:
        """One line for the node's log: the facts and what they decide."""
        return ", ".join([
            "cgroup v2" if self.cgroup_v2 else "cgroup v1",
            "kernel modules" if self.modules else "no kernel modules (nothing to load)",
            "oom_score_adj can be lowered" if self.lower_oom else "oom_score_adj cannot be lowered (restrict_oom_score_adj)",
            f"containerd data in {containerd_root(self)}",
            f"resolv.conf {resolv_conf(self)}",
            "conntrack limits set by kube-proxy" if self.conntrack_max_writable else "conntrack limits read-only (kube-proxy leaves them)",
        ])


def unit_path(unit: str) -> str:
    return f"{UNIT_DIR}/{unit}.service"


def containerd_root(facts: NodeFacts) -> str:
    """/var/lib/containerd, unless that is on overlayfs (an overlay upper dir cannot be on one)."""
    return CONTAINERD_TMPFS_ROOT if facts.containerd_on_overlay else CONTAINERD_ROOT


def resolv_conf(facts: NodeFacts) -> str:
    return RESOLVED_RESOLV_CONF if facts.resolved else HOST_RESOLV_CONF


def containerd_config(version: str, facts: NodeFacts) -> str:
    """Schema version 2 for containerd 1.x, version 3 (the 2.x plugin ids) for 2.x."""
    release = version_tuple(version)
    return render(
        "containerd2-config.toml.j2" if release[0] >= 2 else "containerd1-config.toml.j2",
        cni_bin_dirs=release[:2] >= CNI_BIN_DIRS_FROM,
        root=containerd_root(facts),
        state=CONTAINERD_STATE,
        socket=CONTAINERD_SOCKET,
        sandbox_image=PAUSE_IMAGE,
        restrict_oom_score_adj=not facts.lower_oom,
        runc=RUNC_BINARY,
        cni_bin_dir=CNI_BIN_DIR,
        cni_conf_dir=CNI_CONF_DIR,
    )


def containerd_unit(facts: NodeFacts) -> str:
    return render("containerd.service.j2", bin_dir=BIN_DIR, config=CONTAINERD_CONFIG, load_modules=facts.modules)


def cni_bridge(node: Node) -> str:
    return render("cni-bridge.conf.j2", pod_cidr=node.pod_cidr)


def cni_loopback() -> str:
    return render("cni-loopback.conf.j2")


def kubelet_config(topo: Topology, node: Node, facts: NodeFacts) -> str:
    net = topo.config.network
    return render(
        "kubelet-config.yaml.j2",
        ca_file=CA_FILE,
        cluster_domain=net.cluster_domain,
        dns_ip=net.dns_ip,
        runtime_endpoint=f"unix://{CONTAINERD_SOCKET}",
        pod_cidr=node.pod_cidr,
        resolv_conf=resolv_conf(facts),
        tls_cert=f"{KUBELET_DIR}/{node.name}.pem",
        tls_key=f"{KUBELET_DIR}/{node.name}-key.pem",
        fail_cgroup_v1_false=not facts.cgroup_v2 and topo.config.minor >= FAIL_CGROUP_V1_FROM,
    )


def kubelet_unit(node: Node) -> str:
    return render("kubelet.service.j2", bin_dir=BIN_DIR, config=KUBELET_CONFIG, kubeconfig=KUBELET_KUBECONFIG,
                  node_name=node.name, node_ip=node.internal_ip)


def kube_proxy_config(topo: Topology, node: Node, facts: NodeFacts) -> str:
    return render("kube-proxy-config.yaml.j2", kubeconfig=KUBE_PROXY_KUBECONFIG,
                  cluster_cidr=topo.config.network.cluster_cidr, node_name=node.name,
                  leave_conntrack_max=not facts.conntrack_max_writable)


def kube_proxy_unit() -> str:
    return render("kube-proxy.service.j2", bin_dir=BIN_DIR, config=KUBE_PROXY_CONFIG)


def kernel_files(facts: NodeFacts) -> list[NodeFile]:
    """The sysctls, and the modules to load at boot where there are modules."""
    files = [NodeFile(SYSCTL_FILE, render("worker-sysctl.conf.j2").encode())]
    if facts.modules:
        files.append(NodeFile(MODULES_FILE, render("worker-modules.conf.j2", modules=MODULES).encode()))
    return files


def worker_files(a: Artifacts, node: Node, facts: NodeFacts) -> list[NodeFile]:
    """Everything the workers stage places on `node` except the release binaries."""
    return [*worker_secret_files(a, node), *worker_config_files(a.topo, node, facts)]


def worker_config_files(topo: Topology, node: Node, facts: NodeFacts) -> list[NodeFile]:
    """The configs and units, as `facts` decide them: what holds no credential."""
    return [
        *kernel_files(facts),
        NodeFile(CONTAINERD_CONFIG, containerd_config(topo.config.versions.containerd, facts).encode()),
        NodeFile(unit_path("containerd"), containerd_unit(facts).encode()),
        NodeFile(CNI_BRIDGE, cni_bridge(node).encode()),
        NodeFile(CNI_LOOPBACK, cni_loopback().encode()),
        NodeFile(KUBELET_CONFIG, kubelet_config(topo, node, facts).encode()),
        NodeFile(unit_path("kubelet"), kubelet_unit(node).encode()),
        NodeFile(KUBE_PROXY_CONFIG, kube_proxy_config(topo, node, facts).encode()),
        NodeFile(unit_path("kube-proxy"), kube_proxy_unit().encode()),
    ]


def restart_inputs(node: Node) -> dict[str, frozenset[str]]:
    """unit -> the placed files it reads at start: a change to any of them restarts it (CNI configs
    and runc are read per container, so they restart nothing)."""
    return {
        "containerd": frozenset({unit_path("containerd"), CONTAINERD_CONFIG, CONTAINERD_FILES["containerd"]}),
        "kubelet": frozenset({unit_path("kubelet"), KUBELET_CONFIG, KUBELET_KUBECONFIG, CA_FILE, KUBERNETES_FILES["kubelet"],
                              f"{KUBELET_DIR}/{node.name}.pem", f"{KUBELET_DIR}/{node.name}-key.pem"}),
        "kube-proxy": frozenset({unit_path("kube-proxy"), KUBE_PROXY_CONFIG, KUBE_PROXY_KUBECONFIG, KUBERNETES_FILES["kube-proxy"]}),
    }


# --- pod routes (the routes stage) -----------------------------------------------------------------


def node_routes(topo: Topology, node: Node) -> list[Route]:
    return [r for r in topo.pod_routes() if r.node == node.name]


def routes_unit(routes: list[Route]) -> str:
    return render("pod-routes.service.j2", routes=routes)


def routes_files(topo: Topology, node: Node) -> list[NodeFile]:
    """The node's persisted pod routes; none where there is no other worker to reach."""
    routes = node_routes(topo, node)
    return [NodeFile(unit_path(ROUTES_UNIT), routes_unit(routes).encode())] if routes else []
