"""Everything derived from the config: node names, roles, addresses, pod CIDRs, SANs, names.

Pure functions of the config and the addresses learned at run time (external IPs, the public
API address), so every certificate, flag, route and cloud resource is computed from one place
and no node count is ever written down twice.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property

from khwtui.core.errors import ConfigError
from khwtui.model.config import CONTROLLER_START, RFC1035, Config, worker_start

LB_OFFSET = 2  # the local/machines load balancer node (.1 is the gateway)
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
HEALTH_CHECK_SOURCES = ("35.191.0.0/16", "209.85.152.0/22", "209.85.204.0/22")


@dataclass(frozen=True)
class Node:
    """One machine. `name` is its only identity: instance, hostname, etcd member, kubelet node, CN."""

    name: str
    role: str  # controller | worker | lb
    index: int  # position among nodes of its role
    internal_ip: str
    pod_cidr: str | None = None
    external_ip: str | None = None


@dataclass(frozen=True)
class Addresses:
    """What is only known once the infrastructure exists."""

    external: dict[str, str] = field(default_factory=dict)  # node name -> external IP
    public: str | None = None  # the API endpoint's address (gcp static address)


@dataclass(frozen=True)
class Route:
    node: str  # the node that gets the route (or "" for a cloud route)
    destination: str  # a worker's pod CIDR
    via: str  # that worker's internal address
    worker: str


@dataclass(frozen=True)
class ResourceNames:
    """Every GCE resource name, derived from the cluster name."""

    network: str
    subnet: str
    allow_internal: str
    allow_external: str
    allow_node_api: str
    allow_health_check: str
    allow_smoke: str
    allow_demo: str
    address: str
    http_health_check: str
    health_check: str
    target_pool: str
    backend_service: str
    instance_group: str
    forwarding_rule: str

    def route(self, cidr: str) -> str:
        return f"{self.network}-route-{cidr.replace('.', '-').replace('/', '-')}"

    def all(self) -> dict[str, str]:
        return dict(vars(self))


def resource_names(cluster: str) -> ResourceNames:
    return ResourceNames(
        network=cluster,
        subnet=f"{cluster}-subnet",
        allow_internal=f"{cluster}-allow-internal",
        allow_external=f"{cluster}-allow-external",
        allow_node_api=f"{cluster}-allow-nodes-api",
        allow_health_check=f"{cluster}-allow-health-check",
        allow_smoke=f"{cluster}-allow-nginx-service",
        allow_demo=f"{cluster}-allow-demo",
        address=f"{cluster}-api",
        http_health_check=f"{cluster}-healthz",
        health_check=f"{cluster}-readyz",
        target_pool=f"{cluster}-target-pool",
        backend_service=f"{cluster}-api-backend",
        instance_group=f"{cluster}-controllers",
        forwarding_rule=f"{cluster}-forwarding-rule",
    )


def node_name(config: Config, role: str, index: int | None = None) -> str:
    base = role if index is None else f"{role}-{index}"
    return f"{config.topology.name_prefix}-{base}" if config.topology.name_prefix else base


def pod_cidr(config: Config, index: int) -> str:
    cluster = ipaddress.IPv4Network(config.network.cluster_cidr)
    size = 2 ** (32 - config.network.pod_prefix)
    return str(ipaddress.IPv4Network((int(cluster.network_address) + index * size, config.network.pod_prefix)))


def _planned_nodes(config: Config) -> list[Node]:
    net = ipaddress.IPv4Network(config.network.node_cidr)
    t = config.topology
    nodes = [
        Node(node_name(config, "controller", i), "controller", i, str(net.network_address + CONTROLLER_START + i))
        for i in range(t.controllers)
    ]
    start = worker_start(t.controllers)
    nodes += [
        Node(node_name(config, "worker", i), "worker", i, str(net.network_address + start + i), pod_cidr(config, i))
        for i in range(t.workers)
    ]
    if config.provider.kind == "local":
        nodes.append(Node(node_name(config, "lb"), "lb", 0, str(net.network_address + LB_OFFSET)))
    return nodes


def _inventory_nodes(config: Config) -> list[Node]:
    counters = {"controller": 0, "worker": 0, "lb": 0}
    nodes = []
    for host in config.machines.hosts:
        index = counters[host.role]
        counters[host.role] += 1
        cidr = pod_cidr(config, index) if host.role == "worker" else None
        nodes.append(Node(host.name, host.role, index, host.address, cidr))
    return nodes


@dataclass(frozen=True)
class Topology:
    """The cluster as the config and the learned addresses define it."""

    config: Config
    addresses: Addresses = Addresses()

    @cached_property
    def nodes(self) -> tuple[Node, ...]:
        base = _inventory_nodes(self.config) if self.config.provider.kind == "machines" else _planned_nodes(self.config)
        ext = self.addresses.external
        return tuple(Node(n.name, n.role, n.index, n.internal_ip, n.pod_cidr, ext.get(n.name)) for n in base)

    def role(self, role: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == role)

    @property
    def controllers(self) -> tuple[Node, ...]:
        return self.role("controller")

    @property
    def workers(self) -> tuple[Node, ...]:
        return self.role("worker")

    @property
    def lb(self) -> Node | None:
        found = self.role("lb")
        return found[0] if found else None

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # --- the API endpoint ---------------------------------------------------------------

    @property
    def api_address(self) -> str | None:
        """gcp: the static address (None until known); local/machines: the lb, else controller 0."""
        if self.config.provider.kind == "gcp":
            return self.addresses.public
        lb = self.lb
        return lb.internal_ip if lb else self.controllers[0].internal_ip

    @property
    def api_endpoint_warning(self) -> str | None:
        if self.config.provider.kind == "machines" and self.lb is None:
            first = self.controllers[0]
            return f"no lb host: the API endpoint is {first.name} ({first.internal_ip}), so it is not highly available"
        return None

    @property
    def api_url(self) -> str | None:
        address = self.api_address
        return f"https://{address}:{self.config.network.api_port}" if address else None

    @property
    def local_api_url(self) -> str:
        return f"https://127.0.0.1:{self.config.network.api_port}"

    # --- services and certificates ------------------------------------------------------

    @property
    def kubernetes_service_ip(self) -> str:
        return str(ipaddress.IPv4Network(self.config.network.service_cidr).network_address + 1)

    def apiserver_sans(self) -> tuple[list[str], list[str]]:
        """(DNS names, IP addresses) for the apiserver certificate, derived like its flags."""
        domain = self.config.network.cluster_domain
        dns = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster",
            f"kubernetes.default.svc.{domain}",
            f"kubernetes.svc.{domain}",
        ]
        ips = [self.kubernetes_service_ip, "127.0.0.1", *(c.internal_ip for c in self.controllers)]
        if self.api_address:
            ips.append(self.api_address)
        return _unique(dns), _unique(ips)

    def worker_sans(self, node: Node) -> tuple[list[str], list[str]]:
        ips = [node.internal_ip] + ([node.external_ip] if node.external_ip else [])
        return [node.name], _unique(ips)

    # --- etcd -----------------------------------------------------------------------------

    @property
    def etcd_initial_cluster(self) -> str:
        return ",".join(f"{c.name}=https://{c.internal_ip}:{ETCD_PEER_PORT}" for c in self.controllers)

    @property
    def etcd_servers(self) -> str:
        return ",".join(f"https://{c.internal_ip}:{ETCD_CLIENT_PORT}" for c in self.controllers)

    # --- routes and cloud names -----------------------------------------------------------

    def pod_routes(self) -> list[Route]:
        """For local/machines: each node gets a route to every other worker's pod CIDR."""
        return [
            Route(n.name, w.pod_cidr or "", w.internal_ip, w.name)
            for n in self.nodes
            for w in self.workers
            if w.name != n.name
        ]

    @property
    def names(self) -> ResourceNames:
        return resource_names(self.config.cluster.name)

    def route_names(self) -> dict[str, str]:
        """worker name -> its GCE route name."""
        return {w.name: self.names.route(w.pod_cidr or "") for w in self.workers}


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def check_names(config: Config) -> None:
    """Every derived cloud and node name must be a valid GCE name of at most 63 characters."""
    topo = Topology(config)
    fix_cluster = "use a shorter cluster.name"
    for kind, name in topo.names.all().items():
        _check("cluster.name", f"resource name {name!r} ({kind})", name, fix_cluster)
    for name in topo.route_names().values():
        _check("cluster.name", f"route name {name!r}", name, fix_cluster)
    if config.provider.kind != "machines":
        for node in topo.nodes:
            _check("topology.name_prefix", f"node name {node.name!r}", node.name, "use a shorter topology.name_prefix")


def _check(key: str, what: str, name: str, fix: str) -> None:
    if len(name) > 63:
        raise ConfigError(key, f"{what} is {len(name)} characters, GCE allows 63", fix)
    if not RFC1035.match(name):
        raise ConfigError(key, f"{what} is not a valid RFC 1035 name", fix)
