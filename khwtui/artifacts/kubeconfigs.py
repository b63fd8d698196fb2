"""The kubeconfigs of KTHW Lab 05: who talks to the apiserver, as whom, and through which URL.

Node components (kubelet, kube-proxy) and the operator go through the API endpoint; the
controller components and the controllers' admin kubeconfig use the local apiserver.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from khwtui.artifacts.pki import Pki
from khwtui.artifacts.render import render
from khwtui.model.topology import Topology

ADMIN_USER = "admin-user"  # the operator's own kubeconfig (admin-access stage)


@dataclass(frozen=True)
class KubeconfigSpec:
    """One kubeconfig: file stem, credential (user) name, pki cert name, server URL, context."""

    name: str
    user: str
    cert: str
    server: str
    context: str = "default"


def kubeconfig_specs(topo: Topology) -> list[KubeconfigSpec]:
    """Every kubeconfig the cluster needs; those behind the API endpoint only once its address is known."""
    local = topo.local_api_url
    specs = [
        KubeconfigSpec("kube-controller-manager", "system:kube-controller-manager", "kube-controller-manager", local),
        KubeconfigSpec("kube-scheduler", "system:kube-scheduler", "kube-scheduler", local),
        KubeconfigSpec("admin", "admin", "admin", local),
    ]
    remote = topo.api_url
    if remote is None:  # gcp before the static address exists
        return specs
    kubelets = [KubeconfigSpec(w.name, f"system:node:{w.name}", w.name, remote) for w in topo.workers]
    proxy = KubeconfigSpec("kube-proxy", "system:kube-proxy", "kube-proxy", remote)
    operator = KubeconfigSpec(ADMIN_USER, "admin", "admin", remote, context=topo.config.cluster.name)
    return [*kubelets, proxy, *specs, operator]


def spec_named(topo: Topology, name: str) -> KubeconfigSpec:
    """The spec with file stem `name`; KeyError when it does not exist (yet)."""
    for spec in kubeconfig_specs(topo):
        if spec.name == name:
            return spec
    raise KeyError(name)


def kubeconfig(topo: Topology, pki: Pki, spec: KubeconfigSpec) -> str:
    """The kubeconfig text with the CA, client certificate and key embedded."""
    return render(
        "kubeconfig.yaml.j2",
        cluster=topo.config.cluster.name,
        server=spec.server,
        user=spec.user,
        context=spec.context,
        ca_data=_b64(pki.ca_pem()),
        cert_data=_b64(pki.cert_pem(spec.cert)),
        key_data=_b64(pki.key_pem(spec.cert)),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
