"""The control plane's node files: the three units, the scheduler config and the RBAC manifest.

Every flag value comes from the topology (KTHW Lab 08 with its etcd TLS cluster and service CIDR
restored); file paths are the nodefiles constants, so the stage places exactly what the units
name. Where a minor changes a format the template branches on `minor` (the RBAC subresources of
1.36); the flags KTHW needs are the same in 1.34-1.37 (the tests check every minor against a
flag inventory with its sources).
"""

from __future__ import annotations

import re

from khwtui.artifacts.nodefiles import KUBERNETES_DIR, Artifacts, control_plane_secret_files
from khwtui.artifacts.pki import FRONT_PROXY_CA, FRONT_PROXY_CLIENT, cert_specs
from khwtui.artifacts.render import NodeFile, render
from khwtui.core.errors import StateError
from khwtui.model.topology import Node, Topology

BIN_DIR = "/usr/local/bin"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
UNIT_DIR = "/etc/systemd/system"
CONFIG_DIR = "/etc/kubernetes/config"
SCHEDULER_CONFIG = f"{CONFIG_DIR}/kube-scheduler.yaml"
CONTROLLER_MANAGER_KUBECONFIG = f"{KUBERNETES_DIR}/kube-controller-manager.kubeconfig"
SCHEDULER_KUBECONFIG = f"{KUBERNETES_DIR}/kube-scheduler.kubeconfig"
CA_FILE = f"{KUBERNETES_DIR}/ca.pem"
AUDIT_LOG = "/var/log/audit.log"
AUDIT_POLICY = f"{CONFIG_DIR}/audit-policy.yaml"
ADMISSION_PLUGINS = "NamespaceLifecycle,NodeRestriction,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota"
NODE_PORT_RANGE = "30000-32767"
APISERVER_CERT = "kubernetes"  # pki name of the apiserver's serving and kubelet-client certificate
CERT_NAME = "kubernetes"  # a DNS name in the apiserver certificate, for addresses that are not in it
_PATH = re.compile(r"/[\w.@+-]+(?:/[\w.@+-]+)+")


def unit_path(unit: str) -> str:
    return f"{UNIT_DIR}/{unit}.service"


def apiserver_unit(topo: Topology, node: Node) -> str:
    """kube-apiserver on `node`; the service-account issuer is the API endpoint, so it must be known."""
    if topo.api_url is None:
        raise StateError("the API endpoint address is not known yet, so the apiserver has no service-account issuer; fix: run the compute stage first")
    net = topo.config.network
    return render(
        "kube-apiserver.service.j2",
        bin_dir=BIN_DIR,
        dir=KUBERNETES_DIR,
        advertise_address=node.internal_ip,
        audit_log=AUDIT_LOG,
        audit_policy=AUDIT_POLICY,
        proxy_client=FRONT_PROXY_CLIENT,
        front_proxy_ca=FRONT_PROXY_CA,
        admission_plugins=ADMISSION_PLUGINS,
        etcd_servers=topo.etcd_servers,
        api_port=net.api_port,
        service_account_issuer=topo.api_url,
        service_cidr=net.service_cidr,
        node_port_range=NODE_PORT_RANGE,
    )


def controller_manager_unit(topo: Topology) -> str:
    net = topo.config.network
    return render(
        "kube-controller-manager.service.j2",
        bin_dir=BIN_DIR,
        dir=KUBERNETES_DIR,
        cluster_cidr=net.cluster_cidr,
        cluster_name=topo.config.cluster.name,
        kubeconfig=CONTROLLER_MANAGER_KUBECONFIG,
        service_cidr=net.service_cidr,
    )


def scheduler_unit() -> str:
    return render("kube-scheduler.service.j2", bin_dir=BIN_DIR, config=SCHEDULER_CONFIG)


def scheduler_config() -> str:
    return render("kube-scheduler.yaml.j2", kubeconfig=SCHEDULER_KUBECONFIG)


def rbac_manifest(topo: Topology) -> str:
    """The apiserver-to-kubelet ClusterRole and its binding to the apiserver's client identity."""
    user = next(spec.cn for spec in cert_specs(topo) if spec.name == APISERVER_CERT)
    return render("apiserver-to-kubelet-rbac.yaml.j2", apiserver_user=user, minor=topo.config.minor)


def control_plane_files(a: Artifacts, node: Node) -> list[NodeFile]:
    """Everything the control-plane stage places on a controller except the binaries."""
    return [*control_plane_secret_files(a, node), *control_plane_config_files(a.topo, node)]


def control_plane_config_files(topo: Topology, node: Node) -> list[NodeFile]:
    """The units and the scheduler config: what holds no credential."""
    return [
        NodeFile(SCHEDULER_CONFIG, scheduler_config().encode()),
        NodeFile(AUDIT_POLICY, render("audit-policy.yaml.j2").encode()),
        NodeFile(unit_path("kube-apiserver"), apiserver_unit(topo, node).encode()),
        NodeFile(unit_path("kube-controller-manager"), controller_manager_unit(topo).encode()),
        NodeFile(unit_path("kube-scheduler"), scheduler_unit().encode()),
    ]


def unit_inputs(unit: str, files: list[NodeFile]) -> set[str]:
    """The placed files a unit reads: its unit file, every file it names, and the files those name
    (the scheduler config names the scheduler's kubeconfig). A change to any of them restarts it."""
    by_path = {f.path: f for f in files}
    wanted, todo = set(), [unit_path(unit)]
    while todo:
        path = todo.pop()
        if path in wanted or path not in by_path:
            continue
        wanted.add(path)
        if path.startswith((UNIT_DIR, CONFIG_DIR)):  # units and configs name files; the rest is data
            todo.extend(_PATH.findall(by_path[path].content.decode()))
    return wanted
