"""Kubeconfigs: accepted by kubectl, signed by the cluster CA, the KTHW identity, the right server."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from khwtui.artifacts.kubeconfigs import kubeconfig, kubeconfig_specs
from khwtui.artifacts.pki import Pki
from khwtui.model import config
from khwtui.model.topology import Addresses, Topology

KUBECTL = "/usr/bin/kubectl"
PUBLIC = "203.0.113.10"

GCP_3_3 = {"cluster": {"name": "kthw-ha"}, "topology": {"controllers": 3, "workers": 3}}
LOCAL_1_5 = {
    "cluster": {"name": "lab-small"},
    "provider": {"kind": "local"},
    "topology": {"controllers": 1, "workers": 5, "name_prefix": "lab"},
    "network": {
        "node_cidr": "192.168.50.0/24",
        "cluster_cidr": "172.20.0.0/16",
        "pod_prefix": 26,
        "service_cidr": "10.96.0.0/20",
        "dns_ip": "10.96.0.10",
        "cluster_domain": "k8s.example",
        "api_port": 8443,
    },
    "pki": {"key_type": "ecdsa-p256"},
}


def expected(workers: list[str], remote: str, local: str, cluster: str) -> dict[str, tuple[str, str, str, str]]:
    """name -> (certificate CN, certificate O, server URL, context), as KTHW Lab 04/05/10 prescribe."""
    table = {w: (f"system:node:{w}", "system:nodes", remote, "default") for w in workers}
    table["kube-proxy"] = ("system:kube-proxy", "system:node-proxier", remote, "default")
    table["kube-controller-manager"] = ("system:kube-controller-manager", "system:kube-controller-manager", local, "default")
    table["kube-scheduler"] = ("system:kube-scheduler", "system:kube-scheduler", local, "default")
    table["admin"] = ("admin", "system:masters", local, "default")
    table["admin-user"] = ("admin", "system:masters", remote, cluster)
    return table


CASES = {
    "gcp-3+3": (
        GCP_3_3,
        Addresses(public=PUBLIC, external={"worker-0": "198.51.100.20"}),
        expected(["worker-0", "worker-1", "worker-2"], f"https://{PUBLIC}:6443", "https://127.0.0.1:6443", "kthw-ha"),
    ),
    "local-1+5": (
        LOCAL_1_5,
        Addresses(),
        expected([f"lab-worker-{i}" for i in range(5)], "https://192.168.50.2:8443", "https://127.0.0.1:8443", "lab-small"),
    ),
}


def kubectl_view(path: Path) -> dict:
    """What kubectl itself reads from the file (--minify fails unless the current context resolves)."""
    done = subprocess.run(
        [KUBECTL, "config", "view", "--raw", "--minify", "--kubeconfig", str(path), "-o", "json"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def openssl(*args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_kubeconfig_is_read_by_kubectl_and_carries_the_kthw_identity(tmp_path: Path, case: str) -> None:
    raw, addresses, want = CASES[case]
    cfg = config.from_dict(raw)
    topo = Topology(cfg, addresses)
    pki = Pki(tmp_path / "pki", cfg)
    pki.ensure(topo)
    ca_file = tmp_path / "pki" / "ca.pem"

    specs = kubeconfig_specs(topo)
    assert sorted(s.name for s in specs) == sorted(want)
    for spec in specs:
        path = tmp_path / f"{spec.name}.kubeconfig"
        path.write_text(kubeconfig(topo, pki, spec))
        view = kubectl_view(path)
        cn, org, server, context = want[spec.name]

        assert view["current-context"] == context
        (cluster,) = view["clusters"]
        assert cluster["name"] == cfg.cluster.name
        assert cluster["cluster"]["server"] == server
        assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == pki.ca_pem()
        (user,) = view["users"]
        assert user["name"] == spec.user == view["contexts"][0]["context"]["user"]
        cert = base64.b64decode(user["user"]["client-certificate-data"])
        assert base64.b64decode(user["user"]["client-key-data"]) == pki.key_pem(spec.cert)

        cert_file = tmp_path / f"{spec.name}-client.pem"
        cert_file.write_bytes(cert)
        assert openssl("verify", "-CAfile", str(ca_file), str(cert_file)) == f"{cert_file}: OK"
        subject = openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", str(cert_file))
        assert subject == f"subject=CN={cn},O={org}"


def test_kubeconfigs_behind_an_unknown_api_endpoint_are_left_out() -> None:
    topo = Topology(config.from_dict(GCP_3_3), Addresses())  # gcp before the static address exists
    assert topo.api_url is None
    specs = kubeconfig_specs(topo)
    assert [s.name for s in specs] == ["kube-controller-manager", "kube-scheduler", "admin"]
    assert {s.server for s in specs} == {"https://127.0.0.1:6443"}

