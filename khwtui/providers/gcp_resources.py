"""The compute resources a cluster wants on GCE, as compute_v1 objects, and how to judge one found.

Built only from the config, the topology (every name, address and pod CIDR) and the resolved
project/region/zone, so `plan` and `ensure` cannot disagree. KTHW's lab 03 on a current image:
custom-mode network, one subnet, an internal and an external firewall rule, a regional static
address, and one instance per node with IP forwarding, tags [cluster, role], a pinned internal
address, an external NAT address, and metadata for SSH (ssh-keys, OS Login off) and for
publishing host keys (guest attributes on, which only works when set at creation). Then what
later stages ask for: lab 08's front end (either design), lab 11's routes, lab 13's NodePort rule.

Ownership: label khwtui-cluster=<cluster> where GCE has labels (instances and their boot disks
on insert; the address and the forwarding rule by setLabels after it, as the API sets theirs
only that way) and the description "khwtui-cluster=<cluster>" on every kind that has one, the
address and the forwarding rule included. A resource with neither is never khwtui's.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.cloud import compute_v1 as c

from khwtui.model.config import Config
from khwtui.model.topology import HEALTH_CHECK_SOURCES, Node, Topology
from khwtui.providers.gcloud_settings import GcpSettings
from khwtui.providers.gcp_api import KINDS, HttpHealthCheck, last

LABEL = "khwtui-cluster"
MARKER = re.compile(r"khwtui-cluster=([a-z][-a-z0-9]*)")
# gcloud's aliases compute-rw, storage-ro, service-management, service-control, logging-write, monitoring
SCOPES = (
    "https://www.googleapis.com/auth/compute",
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/service.management.readonly",
    "https://www.googleapis.com/auth/servicecontrol",
    "https://www.googleapis.com/auth/logging.write",
    "https://www.googleapis.com/auth/monitoring",
)


@dataclass(frozen=True)
class Wanted:
    """One resource to create or adopt."""

    collection: str
    resource: Any  # the compute_v1 message sent on insert
    detail: str  # one line for plans and logs
    setting: str  # the setting that changes its name, should another cluster own that name
    labels: dict[str, str] = field(default_factory=dict)  # set by setLabels after the insert (addresses, forwarding rules)

    @property
    def name(self) -> str:
        return self.resource.name

    @property
    def noun(self) -> str:
        return KINDS[self.collection].noun


@dataclass(frozen=True)
class Desired:
    network: Wanted
    subnet: Wanted
    firewalls: tuple[Wanted, ...]
    address: Wanted
    instances: tuple[Wanted, ...]

    def all(self) -> list[Wanted]:
        """In creation order."""
        return [self.network, self.subnet, *self.firewalls, self.address, *self.instances]


def marker(cluster: str) -> str:
    return f"{LABEL}={cluster}"


def owner_of(resource: Any) -> str | None:
    """The cluster a resource belongs to, from its label or its description; None if neither."""
    labels = getattr(resource, "labels", None) or {}
    if LABEL in labels:
        return labels[LABEL]
    found = MARKER.fullmatch(getattr(resource, "description", "") or "")
    return found[1] if found else None


def desired(config: Config, topo: Topology, settings: GcpSettings, client_public_key: str) -> Desired:
    names, cluster = topo.names, config.cluster.name
    region, zone = settings.region, settings.zone
    network_url = f"global/networks/{names.network}"  # partial URLs: the project is the request's
    subnet_url = f"regions/{region}/subnetworks/{names.subnet}"
    net = config.network
    internal = _firewall(
        names.allow_internal, network_url, cluster, [c.Allowed(I_p_protocol=p) for p in ("tcp", "udp", "icmp")], [net.node_cidr, net.cluster_cidr]
    )
    ports = sorted({str(config.ssh.port), str(net.api_port)}, key=int)
    external = _firewall(
        names.allow_external, network_url, cluster, [c.Allowed(I_p_protocol="tcp", ports=ports), c.Allowed(I_p_protocol="icmp")], list(config.gcp.admin_cidrs)
    )
    return Desired(
        network=Wanted(
            "networks",
            c.Network(name=names.network, auto_create_subnetworks=False, description=marker(cluster)),
            "custom subnet mode",
            "cluster.name",
        ),
        subnet=Wanted(
            "subnetworks",
            c.Subnetwork(name=names.subnet, network=network_url, ip_cidr_range=net.node_cidr, description=marker(cluster)),
            f"{net.node_cidr} in {region}",
            "cluster.name",
        ),
        firewalls=(internal, external),
        address=Wanted(
            "addresses",
            c.Address(name=names.address, address_type="EXTERNAL", description=marker(cluster)),
            f"static external IPv4 in {region}, the API endpoint",
            "cluster.name",
            {LABEL: cluster},
        ),
        instances=tuple(_instance(config, node, zone, subnet_url, client_public_key) for node in topo.nodes),
    )


def _firewall(name: str, network_url: str, cluster: str, allowed: list[c.Allowed], sources: list[str], role: str = "") -> Wanted:
    """A rule for every node of the network, or (`role`) only for the nodes tagged with it."""
    rule = c.Firewall(
        name=name, network=network_url, direction="INGRESS", allowed=allowed, source_ranges=sources, description=marker(cluster),
        target_tags=[role] if role else [],
    )
    to = f" to the {role}s" if role else ""
    return Wanted("firewalls", rule, f"{', '.join(_allowed(rule))} from {', '.join(sources)}{to}", "cluster.name")


def _instance(config: Config, node: Node, zone: str, subnet_url: str, client_public_key: str) -> Wanted:
    g, cluster = config.gcp, config.cluster.name
    metadata = {"pod-cidr": node.pod_cidr} if node.pod_cidr else {}
    metadata |= {
        "ssh-keys": f"{config.ssh.user}:{client_public_key.strip()}",
        "enable-oslogin": "FALSE",
        "enable-guest-attributes": "TRUE",
    }
    instance = c.Instance(
        name=node.name,
        machine_type=f"zones/{zone}/machineTypes/{g.machine_type}",
        can_ip_forward=True,
        tags=c.Tags(items=[cluster, node.role]),
        labels={LABEL: cluster},
        metadata=c.Metadata(items=[c.Items(key=k, value=v) for k, v in metadata.items()]),
        disks=[
            c.AttachedDisk(
                boot=True,
                auto_delete=True,
                type_="PERSISTENT",
                initialize_params=c.AttachedDiskInitializeParams(
                    source_image=f"projects/{g.image_project}/global/images/family/{g.image_family}",
                    disk_size_gb=g.disk_gb,
                    labels={LABEL: cluster},
                ),
            )
        ],
        network_interfaces=[
            c.NetworkInterface(
                subnetwork=subnet_url,
                network_i_p=node.internal_ip,
                access_configs=[c.AccessConfig(name="external-nat", type_="ONE_TO_ONE_NAT")],
            )
        ],
        service_accounts=[c.ServiceAccount(email="default", scopes=list(SCOPES))],
    )
    pods = f", pods {node.pod_cidr}" if node.pod_cidr else ""
    detail = f"{node.role}, {g.machine_type}, {g.image_project}/{g.image_family}, {g.disk_gb} GB disk, {node.internal_ip}{pods}, {zone}"
    return Wanted("instances", instance, detail, "topology.name_prefix")


# --- later stages: the front end, pod routes, NodePort rules ---------------------------------


@dataclass(frozen=True)
class Frontend:
    """The load balancer of one design, in creation order, and what joins its pool or group."""

    resources: tuple[Wanted, ...]
    members: tuple[str, ...]  # the controllers' instance names
    pool: Wanted  # the target pool (addInstance) or the instance group (addInstances)


def frontend(config: Config, topo: Topology, settings: GcpSettings, api_ip: str) -> Frontend:
    """gcp.load_balancer's resources: KTHW's legacy health check + target pool, or a regional
    backend service over an unmanaged instance group; either way the health-check firewall rule
    and a forwarding rule on the static address and the API port."""
    names, cluster, region = topo.names, config.cluster.name, settings.region
    port = config.network.api_port
    members = tuple(n.name for n in topo.controllers)
    chain: tuple[Wanted, ...]  # the balancer's resources in creation order
    if config.gcp.load_balancer == "target-pool":
        host = f"kubernetes.default.svc.{config.network.cluster_domain}"
        check = Wanted(
            "httpHealthChecks",
            HttpHealthCheck(names.http_health_check, marker(cluster), host, "/healthz", 80),
            f"HTTP {host}:80/healthz (the controllers' nginx proxy)",
            "cluster.name",
        )
        pool = Wanted(
            "targetPools",
            c.TargetPool(name=names.target_pool, description=marker(cluster), health_checks=[f"global/httpHealthChecks/{names.http_health_check}"]),
            f"{', '.join(members)} in {region}",
            "cluster.name",
        )
        target = {"target": f"regions/{region}/targetPools/{names.target_pool}"}
        probed, chain = 80, (check, pool)
    else:
        group = Wanted(
            "instanceGroups",
            c.InstanceGroup(name=names.instance_group, description=marker(cluster), network=f"global/networks/{names.network}"),
            f"unmanaged, {', '.join(members)} in {settings.zone}",
            "cluster.name",
        )
        check = Wanted(
            "healthChecks",
            c.HealthCheck(
                name=names.health_check, description=marker(cluster), type_="HTTPS",
                https_health_check=c.HTTPSHealthCheck(port=port, request_path="/readyz"),
            ),
            f"HTTPS :{port}/readyz in {region}",
            "cluster.name",
        )
        service = Wanted(
            "backendServices",
            c.BackendService(
                name=names.backend_service, description=marker(cluster), load_balancing_scheme="EXTERNAL", protocol="TCP",
                health_checks=[f"regions/{region}/healthChecks/{names.health_check}"],
                backends=[c.Backend(group=f"zones/{settings.zone}/instanceGroups/{names.instance_group}", balancing_mode="CONNECTION")],
            ),
            f"external TCP, {names.instance_group} by connection, in {region}",
            "cluster.name",
        )
        target = {"backend_service": f"regions/{region}/backendServices/{names.backend_service}"}
        probed, chain, pool = port, (group, check, service), group
    allow = _firewall(
        names.allow_health_check, f"global/networks/{names.network}", cluster,
        [c.Allowed(I_p_protocol="tcp", ports=[str(probed)])], list(HEALTH_CHECK_SOURCES), "controller",
    )
    rule = Wanted(
        "forwardingRules",
        c.ForwardingRule(
            name=names.forwarding_rule, I_p_address=api_ip, I_p_protocol="TCP", port_range=str(port),
            load_balancing_scheme="EXTERNAL", description=marker(cluster), **target,
        ),
        f"{api_ip}:{port} to {last(next(iter(target.values())))}",
        "cluster.name",
        {LABEL: cluster},
    )
    return Frontend((*chain, allow, rule), members, pool)


def routes(config: Config, topo: Topology) -> list[Wanted]:
    """KTHW lab 11: each worker's pod CIDR routed to its internal address."""
    cluster, network, names = config.cluster.name, f"global/networks/{topo.names.network}", topo.route_names()
    return [
        Wanted(
            "routes",
            c.Route(name=names[w.name], network=network, dest_range=w.pod_cidr, next_hop_ip=w.internal_ip, priority=1000, description=marker(cluster)),
            f"{w.pod_cidr} via {w.internal_ip} ({w.name})",
            "cluster.name",
        )
        for w in topo.workers
    ]


def node_api_rule(config: Config, topo: Topology, external_ips: list[str]) -> Wanted:
    """The API port on the controllers from every node's external address: worker kubeconfigs
    name the load balancer's public address, so kubelet and kube-proxy arrive from there (a
    passthrough load balancer keeps the client's address), whatever gcp.admin_cidrs allows."""
    sources = sorted({f"{ip}/32" for ip in external_ips}, key=ipaddress.IPv4Network)
    allowed = [c.Allowed(I_p_protocol="tcp", ports=[str(config.network.api_port)])]
    return _firewall(topo.names.allow_node_api, f"global/networks/{topo.names.network}", config.cluster.name, allowed, sources, "controller")


NODE_API_DETAIL = "tcp:{port} from the nodes' external addresses to the controllers"


def node_port_rule(config: Config, topo: Topology, name: str, port: int) -> Wanted:
    """A NodePort opened to gcp.admin_cidrs on the workers (the smoke and demo stages)."""
    allowed = [c.Allowed(I_p_protocol="tcp", ports=[str(port)])]
    return _firewall(name, f"global/networks/{topo.names.network}", config.cluster.name, allowed, list(config.gcp.admin_cidrs), "worker")


# --- judging what exists ----------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    field: str
    wanted: str
    found: str


@dataclass(frozen=True)
class Field:
    """A field that must match for an existing resource to be adopted (REST name, reader)."""

    name: str
    read: Callable[[Any], object]
    fits: Callable[[object, object], bool] = operator.eq  # (wanted, found)


def _allowed(rule: c.Firewall) -> list[str]:
    return sorted(f"{a.I_p_protocol}:{','.join(a.ports)}" if a.ports else a.I_p_protocol for a in rule.allowed)


def _metadata(key: str) -> Callable[[c.Instance], str]:
    return lambda i: next((item.value for item in i.metadata.items if item.key == key), "")


def _port_range(ports: str) -> str:
    """GCE answers "6443-6443" for a rule sent "6443"."""
    low, _, high = ports.partition("-")
    return low if high in ("", low) else ports


def _lines_include(wanted: object, found: object) -> bool:
    """ssh-keys may hold more keys than ours (gcloud adds its own); ours must be one line."""
    return str(wanted) in str(found).splitlines()


FIELDS: dict[str, tuple[Field, ...]] = {
    "networks": (Field("autoCreateSubnetworks", lambda n: n.auto_create_subnetworks),),
    "subnetworks": (
        Field("network", lambda s: last(s.network)),
        Field("ipCidrRange", lambda s: s.ip_cidr_range),
    ),
    "firewalls": (
        Field("network", lambda f: last(f.network)),
        Field("direction", lambda f: f.direction or "INGRESS"),
        Field("allowed", _allowed),
        Field("sourceRanges", lambda f: sorted(f.source_ranges)),
        Field("targetTags", lambda f: sorted(f.target_tags)),
    ),
    "addresses": (Field("addressType", lambda a: a.address_type or "EXTERNAL"),),
    "routes": (
        Field("network", lambda r: last(r.network)),
        Field("destRange", lambda r: r.dest_range),
        Field("nextHopIp", lambda r: r.next_hop_ip),
    ),
    "httpHealthChecks": (
        Field("host", lambda h: h.host),
        Field("requestPath", lambda h: h.request_path),
        Field("port", lambda h: h.port),
    ),
    "targetPools": (Field("healthChecks", lambda p: [last(u) for u in p.health_checks]),),
    "instanceGroups": (Field("network", lambda g: last(g.network)),),
    "healthChecks": (
        Field("type", lambda h: h.type_),
        Field("httpsHealthCheck.port", lambda h: h.https_health_check.port),
        Field("httpsHealthCheck.requestPath", lambda h: h.https_health_check.request_path or "/"),
    ),
    "backendServices": (
        Field("loadBalancingScheme", lambda b: b.load_balancing_scheme),
        Field("protocol", lambda b: b.protocol),
        Field("healthChecks", lambda b: [last(u) for u in b.health_checks]),
        Field("backends", lambda b: sorted(f"{last(x.group)}:{x.balancing_mode}" for x in b.backends)),
    ),
    "forwardingRules": (
        Field("IPAddress", lambda f: f.I_p_address),
        Field("IPProtocol", lambda f: f.I_p_protocol or "TCP"),
        Field("portRange", lambda f: _port_range(f.port_range)),
        Field("target", lambda f: last(f.target) if f.target else ""),
        Field("backendService", lambda f: last(f.backend_service) if f.backend_service else ""),
        Field("loadBalancingScheme", lambda f: f.load_balancing_scheme or "EXTERNAL"),
    ),
    "instances": (
        Field("machineType", lambda i: last(i.machine_type)),
        Field("canIpForward", lambda i: i.can_ip_forward),
        Field("tags", lambda i: sorted(i.tags.items)),
        Field("networkInterfaces[0].subnetwork", lambda i: last(i.network_interfaces[0].subnetwork) if i.network_interfaces else ""),
        Field("networkInterfaces[0].networkIP", lambda i: i.network_interfaces[0].network_i_p if i.network_interfaces else ""),
        Field("disks[0].autoDelete", lambda i: i.disks[0].auto_delete if i.disks else False),
        Field("metadata.pod-cidr", _metadata("pod-cidr")),
        Field("metadata.enable-oslogin", lambda i: _metadata("enable-oslogin")(i).upper()),
        Field("metadata.enable-guest-attributes", lambda i: _metadata("enable-guest-attributes")(i).upper()),
        Field("metadata.ssh-keys", _metadata("ssh-keys"), _lines_include),
    ),
}


def differences(wanted: Wanted, found: Any) -> list[Difference]:
    """Every field where an existing resource differs from the wanted one."""
    out = []
    for spec in FIELDS[wanted.collection]:
        want, have = spec.read(wanted.resource), spec.read(found)
        if not spec.fits(want, have):
            out.append(Difference(spec.name, _show(want), _show(have)))
    return out


def _show(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value) if value not in ("", None) else "(none)"
