"""Which file goes where on which node, per stage (docs/UPSTREAM.md "KTHW's file locations":
written in place, never moved).

Each stage places the files it consumes: etcd its certificates and unit, control-plane the
apiserver certificates, encryption config and controller kubeconfigs, workers the kubelet and
kube-proxy credentials. The paths are constants here so unit templates can name them.
"""

from __future__ import annotations

from dataclasses import dataclass

from khwtui.artifacts.encryption import encryption_config
from khwtui.artifacts.kubeconfigs import kubeconfig, kubeconfig_specs, spec_named
from khwtui.artifacts.pki import FRONT_PROXY_CA, FRONT_PROXY_CLIENT, Pki
from khwtui.artifacts.render import NodeFile, render
from khwtui.core.errors import StateError
from khwtui.model.topology import ETCD_CLIENT_PORT, ETCD_PEER_PORT, Node, Topology

ETCD_DIR = "/etc/etcd"
ETCD_DATA_DIR = "/var/lib/etcd"
ETCD_BINARY = "/usr/local/bin/etcd"
ETCD_UNIT = "/etc/systemd/system/etcd.service"
KUBERNETES_DIR = "/var/lib/kubernetes"
KUBELET_DIR = "/var/lib/kubelet"
KUBE_PROXY_DIR = "/var/lib/kube-proxy"
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.kubeconfig"
SECRET = 0o600


@dataclass(frozen=True)
class Artifacts:
    """What node files are made from: the topology, the certificates and the encryption key."""

    topo: Topology
    pki: Pki
    encryption_key: bytes


def etcd_token(topo: Topology) -> str:
    """Unique per cluster (KTHW uses a fixed "etcd-cluster-0"), so two clusters' members never mix."""
    return f"{topo.config.cluster.name}-etcd"


def etcd_unit(topo: Topology, node: Node) -> str:
    return render(
        "etcd.service.j2",
        etcd_binary=ETCD_BINARY,
        etcd_dir=ETCD_DIR,
        data_dir=ETCD_DATA_DIR,
        name=node.name,
        internal_ip=node.internal_ip,
        client_port=ETCD_CLIENT_PORT,
        peer_port=ETCD_PEER_PORT,
        token=etcd_token(topo),
        initial_cluster=topo.etcd_initial_cluster,
    )


def etcd_files(a: Artifacts, node: Node) -> list[NodeFile]:
    """The etcd stage's files on a controller: its own copy of the TLS files, and the unit."""
    return [
        NodeFile(f"{ETCD_DIR}/ca.pem", a.pki.ca_pem()),
        *_cert_files(a.pki, ETCD_DIR, "kubernetes"),
        NodeFile(ETCD_UNIT, etcd_unit(a.topo, node).encode()),
    ]


def control_plane_secret_files(a: Artifacts, node: Node) -> list[NodeFile]:
    """The control-plane stage's credentials on a controller (the same on every controller)."""
    pki, topo = a.pki, a.topo
    provider = topo.config.encryption.provider
    return [
        NodeFile(f"{KUBERNETES_DIR}/ca.pem", pki.ca_pem()),
        NodeFile(f"{KUBERNETES_DIR}/ca-key.pem", pki.key_pem("ca"), SECRET),
        *_cert_files(pki, KUBERNETES_DIR, "kubernetes"),
        *_cert_files(pki, KUBERNETES_DIR, "service-account"),
        NodeFile(f"{KUBERNETES_DIR}/{FRONT_PROXY_CA}.pem", pki.cert_pem(FRONT_PROXY_CA)),
        *_cert_files(pki, KUBERNETES_DIR, FRONT_PROXY_CLIENT),
        NodeFile(f"{KUBERNETES_DIR}/encryption-config.yaml", encryption_config(provider, a.encryption_key).encode(), SECRET),
        _kubeconfig_file(a, "kube-controller-manager", f"{KUBERNETES_DIR}/kube-controller-manager.kubeconfig"),
        _kubeconfig_file(a, "kube-scheduler", f"{KUBERNETES_DIR}/kube-scheduler.kubeconfig"),
        _kubeconfig_file(a, "admin", ADMIN_KUBECONFIG),
    ]


def worker_secret_files(a: Artifacts, node: Node) -> list[NodeFile]:
    """The workers stage's credentials on `node`; needs the API endpoint's address."""
    if a.topo.api_url is None:
        raise StateError("the API endpoint address is not known yet, so workers have no kubeconfig; fix: run the compute stage first")
    return _worker_files(a, node)


def node_files(a: Artifacts) -> dict[str, list[NodeFile]]:
    """Every node's files for its role. Before the API address is known, worker kubeconfigs are left out."""
    files: dict[str, list[NodeFile]] = {}
    for node in a.topo.nodes:
        if node.role == "controller":
            files[node.name] = etcd_files(a, node) + control_plane_secret_files(a, node)
        elif node.role == "worker":
            files[node.name] = _worker_files(a, node)
        else:
            files[node.name] = []
    return files


def _worker_files(a: Artifacts, node: Node) -> list[NodeFile]:
    files = [
        NodeFile(f"{KUBERNETES_DIR}/ca.pem", a.pki.ca_pem()),
        *_cert_files(a.pki, KUBELET_DIR, node.name),
    ]
    known = {spec.name for spec in kubeconfig_specs(a.topo)}
    for name, path in ((node.name, f"{KUBELET_DIR}/kubeconfig"), ("kube-proxy", f"{KUBE_PROXY_DIR}/kubeconfig")):
        if name in known:
            files.append(_kubeconfig_file(a, name, path))
    return files


def _cert_files(pki: Pki, directory: str, name: str) -> list[NodeFile]:
    """<name>.pem and <name>-key.pem (0600) in `directory`."""
    return [
        NodeFile(f"{directory}/{name}.pem", pki.cert_pem(name)),
        NodeFile(f"{directory}/{name}-key.pem", pki.key_pem(name), SECRET),
    ]


def _kubeconfig_file(a: Artifacts, name: str, path: str) -> NodeFile:
    return NodeFile(path, kubeconfig(a.topo, a.pki, spec_named(a.topo, name)).encode(), SECRET)
