"""The stage table (docs/ARCHITECTURE.md "The stage contract"): order, titles, one-line descriptions, inputs.

Stage modules are imported lazily by name, so listing the stages (for the TUI, `plan` or
`--help`) costs nothing and never touches asyncssh or the cloud client.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from khwtui.stages.base import Stage


@dataclass(frozen=True)
class StageInfo:
    name: str
    title: str
    description: str
    needs: tuple[str, ...] = ()
    module: str = ""  # khwtui.stages.<module> holds the Stage subclass; "" = not implemented yet


STAGES: list[StageInfo] = [
    StageInfo("compute", "compute", "network, nodes, SSH with pinned host keys", (), "compute"),
    StageInfo("pki", "pki", "CA and every certificate, made once", ("compute",), "pki"),
    StageInfo("kubeconfigs", "kubeconfigs", "kubelet, kube-proxy, controller-manager, scheduler, admin", ("pki",), "kubeconfigs"),
    StageInfo("encryption", "encryption", "secrets encryption config with a key made once", (), "encryption"),
    StageInfo("etcd", "etcd", "TLS etcd cluster on the controllers, all members at once", ("compute", "pki"), "etcd"),
    StageInfo("control-plane", "control plane", "apiserver, controller-manager, scheduler", ("etcd", "kubeconfigs", "encryption"), "control_plane"),
    StageInfo("rbac", "rbac", "apiserver-to-kubelet ClusterRole and binding", ("control-plane",), "rbac"),
    StageInfo("frontend", "frontend", "the load balancer in front of the apiservers", ("control-plane",), "frontend"),
    StageInfo("workers", "workers", "containerd, runc, CNI, kubelet, kube-proxy", ("frontend", "kubeconfigs"), "workers"),
    StageInfo("admin-access", "admin access", "your admin kubeconfig through the load balancer", ("frontend",), "admin_access"),
    StageInfo("routes", "routes", "pod CIDR routes between the workers", ("compute",), "routes"),  # the nodes are its only input
    StageInfo("dns", "dns", "CoreDNS with forward, kube-dns service", ("workers", "routes", "admin-access"), "dns"),
    StageInfo("smoke", "smoke test", "encryption at rest, deployment, port-forward, logs, exec, NodePort", ("dns",), "smoke"),
    StageInfo("demo", "demo", "the multi-container TODO app", ("smoke",), "demo"),
]


def info(name: str) -> StageInfo:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(name)


def stage_class(name: str) -> type[Stage] | None:
    """The Stage subclass of `name`, or None while that stage is not implemented."""
    module = info(name).module
    if not module:
        return None
    loaded = importlib.import_module(f"khwtui.stages.{module}")
    return loaded.STAGE
