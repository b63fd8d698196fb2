"""The front end's node files: haproxy on the lb host (local, machines), or on gcp's target-pool
design KTHW's nginx site on each controller, which turns the legacy health check's plain HTTP
into a verified TLS request to the local apiserver's /healthz.
"""

from __future__ import annotations

from khwtui.artifacts.controlplane_files import CA_FILE as APISERVER_CA
from khwtui.artifacts.controlplane_files import CERT_NAME
from khwtui.artifacts.pki import Pki
from khwtui.artifacts.render import NodeFile, render
from khwtui.model.config import Config
from khwtui.model.topology import Topology

CONFIG = "/etc/haproxy/haproxy.cfg"
CA_FILE = "/etc/haproxy/kubernetes-ca.pem"
STATS_PORT = 8404  # on the lb's loopback only
STATS_PATH = "/stats"
HEALTHZ_SITE = "/etc/nginx/conf.d/kubernetes-healthz.conf"  # Debian's nginx.conf includes conf.d/*.conf


def haproxy_config(topo: Topology) -> str:
    return render(
        "haproxy.cfg.j2",
        api_port=topo.config.network.api_port,
        controllers=topo.controllers,
        ca_file=CA_FILE,
        cert_name=CERT_NAME,
        stats_port=STATS_PORT,
        stats_path=STATS_PATH,
    )


def lb_files(topo: Topology, pki: Pki) -> list[NodeFile]:
    """haproxy's config and the CA it verifies the apiservers with."""
    return [NodeFile(CA_FILE, pki.ca_pem()), NodeFile(CONFIG, haproxy_config(topo).encode())]


def healthz_proxied(config: Config) -> bool:
    """Whether the load balancer probes the controllers through the HTTP /healthz proxy."""
    return config.provider.kind == "gcp" and config.gcp.load_balancer == "target-pool"


def healthz_host(topo: Topology) -> str:
    return f"kubernetes.default.svc.{topo.config.network.cluster_domain}"


def healthz_files(topo: Topology) -> list[NodeFile]:
    """KTHW's nginx site on a controller: :80/healthz for host kubernetes.default.svc.<domain>."""
    site = render("nginx-healthz.conf.j2", host=healthz_host(topo), api_port=topo.config.network.api_port, ca_file=APISERVER_CA)
    return [NodeFile(HEALTHZ_SITE, site.encode())]
