"""gcp's cloud resources as `gcloud compute` command lines, built from the very objects `plan`
lists and `ensure` sends (khwtui.providers.gcp_resources), so the script cannot disagree with them.

Ownership travels along: the description "khwtui-cluster=<name>" where GCE has no labels, the
label where it has, so `khwtui up` later adopts what the script made and `khwtui down` removes it.
The host keys the instances publish in guest attributes are read back and pinned before any SSH.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from google.cloud import compute_v1 as c

from khwtui.model.config import Config
from khwtui.model.topology import Topology
from khwtui.providers import gcp_resources as res
from khwtui.providers.gcloud_settings import GcpSettings, resolve
from khwtui.providers.gcp_api import HttpHealthCheck

NODE_PORT = "NODE_PORT"  # the bash variable holding a Service's NodePort (known once it exists)
NODE_API_SOURCES = "NODE_API_SOURCES"  # the nodes' external addresses as /32 ranges (known once the instances exist)
VARIABLES = (f"tcp:${{{NODE_PORT}}}", f"${{{NODE_API_SOURCES}}}")  # arguments that bash expands, so double-quoted


@dataclass(frozen=True)
class Gcloud:
    """One gcloud command line (argv) and the resource name it creates ("" for one that only changes)."""

    argv: tuple[str, ...]
    creates: str = ""

    @property
    def line(self) -> str:
        return " ".join(f'"{a}"' if any(v in a for v in VARIABLES) else shlex.quote(a) for a in self.argv)


@dataclass(frozen=True)
class Made:
    """One resource: the lines that make it, and the `describe` that tells whether it exists already
    (a script run again skips what is there)."""

    name: str
    describe: Gcloud
    lines: tuple[Gcloud, ...]

    def script(self) -> list[str]:
        return [f"if ! {self.describe.line} >/dev/null 2>&1; then", *(f"  {g.line}" for g in self.lines), "fi"]


def cloud_commands(config: Config, topo: Topology, public_key: str) -> dict[str, list[Made]]:
    """stage -> the resources it makes, in creation order, each with its gcloud lines."""
    s = resolve(config)
    desired = res.desired(config, topo, s, public_key)
    front = res.frontend(config, topo, s, "ADDRESS")
    out = {
        "compute": [_made(w, s, front, topo.names.address) for w in desired.all()],
        "frontend": [*(_made(w, s, front, topo.names.address) for w in front.resources), _node_api(config, topo)],
        "routes": [_made(w, s, front, topo.names.address) for w in res.routes(config, topo)],
        "smoke": _node_port(topo.names.allow_smoke, config, topo),
    }
    if config.demo.enabled:
        out["demo"] = _node_port(topo.names.allow_demo, config, topo)
    return out


def _base(*args: str) -> tuple[str, ...]:
    return ("gcloud", "compute", *args)


# collection -> (the gcloud group, the scope flag its describe needs)
GROUPS = {
    "networks": ("networks", ""), "subnetworks": ("networks subnets", "region"), "firewalls": ("firewall-rules", ""),
    "addresses": ("addresses", "region"), "instances": ("instances", "zone"), "httpHealthChecks": ("http-health-checks", ""),
    "targetPools": ("target-pools", "region"), "instanceGroups": ("instance-groups unmanaged", "zone"),
    "healthChecks": ("health-checks", "region"), "backendServices": ("backend-services", "region"),
    "forwardingRules": ("forwarding-rules", "region"), "routes": ("routes", ""),
}


def _made(w: res.Wanted, s: GcpSettings, front: res.Frontend, address: str) -> Made:
    group, scope = GROUPS[w.collection]
    where = {"region": [f"--region={s.region}"], "zone": [f"--zone={s.zone}"], "": []}[scope]
    return Made(w.name, Gcloud(_base(*group.split(), "describe", w.name, *where)), tuple(_create(w, s, front, address)))


def _create(w: res.Wanted, s: GcpSettings, front: res.Frontend, address: str) -> list[Gcloud]:
    r = w.resource
    if w.collection == "networks":
        return [Gcloud(_base("networks", "create", r.name, "--subnet-mode=custom", f"--description={r.description}"), r.name)]
    if w.collection == "subnetworks":
        return [Gcloud(_base("networks", "subnets", "create", r.name, f"--network={_last(r.network)}", f"--region={s.region}",
                             f"--range={r.ip_cidr_range}", f"--description={r.description}"), r.name)]
    if w.collection == "firewalls":
        return [_firewall(r)]
    if w.collection == "addresses":
        return [Gcloud(_base("addresses", "create", r.name, f"--region={s.region}", f"--description={r.description}"), r.name),
                Gcloud(_base("addresses", "update", r.name, f"--region={s.region}", f"--update-labels={_labels(w.labels)}"))]
    if w.collection == "instances":
        return [_instance(r, s)]
    if w.collection == "httpHealthChecks":
        return [_http_health_check(r)]
    if w.collection == "targetPools":
        return [Gcloud(_base("target-pools", "create", r.name, f"--region={s.region}", f"--http-health-check={_last(r.health_checks[0])}",
                             f"--description={r.description}"), r.name),
                Gcloud(_base("target-pools", "add-instances", r.name, f"--region={s.region}", f"--instances={','.join(front.members)}",
                             f"--instances-zone={s.zone}"))]
    if w.collection == "instanceGroups":
        return [Gcloud(_base("instance-groups", "unmanaged", "create", r.name, f"--zone={s.zone}", f"--description={r.description}"), r.name),
                Gcloud(_base("instance-groups", "unmanaged", "add-instances", r.name, f"--zone={s.zone}", f"--instances={','.join(front.members)}"))]
    if w.collection == "healthChecks":
        h = r.https_health_check
        return [Gcloud(_base("health-checks", "create", "https", r.name, f"--region={s.region}", f"--port={h.port}",
                             f"--request-path={h.request_path}", f"--description={r.description}"), r.name)]
    if w.collection == "backendServices":
        backend = r.backends[0]
        return [Gcloud(_base("backend-services", "create", r.name, f"--region={s.region}", f"--load-balancing-scheme={r.load_balancing_scheme}",
                             f"--protocol={r.protocol}", f"--health-checks={_last(r.health_checks[0])}", f"--health-checks-region={s.region}",
                             f"--description={r.description}"), r.name),
                Gcloud(_base("backend-services", "add-backend", r.name, f"--region={s.region}", f"--instance-group={_last(backend.group)}",
                             f"--instance-group-zone={s.zone}", f"--balancing-mode={backend.balancing_mode}"))]
    if w.collection == "forwardingRules":
        return _forwarding_rule(r, s, address, w.labels)
    if w.collection == "routes":
        return [Gcloud(_base("routes", "create", r.name, f"--network={_last(r.network)}", f"--destination-range={r.dest_range}",
                             f"--next-hop-address={r.next_hop_ip}", f"--priority={r.priority}", f"--description={r.description}"), r.name)]
    raise ValueError(f"no gcloud line for {w.collection}")


def _firewall(r: c.Firewall) -> Gcloud:
    allow = ",".join(f"{a.I_p_protocol}:{p}" if a.ports else a.I_p_protocol for a in r.allowed for p in (a.ports or [""]))
    args = ["firewall-rules", "create", r.name, f"--network={_last(r.network)}", f"--direction={r.direction}", f"--allow={allow}",
            f"--source-ranges={','.join(r.source_ranges)}"]
    if r.target_tags:
        args.append(f"--target-tags={','.join(r.target_tags)}")
    return Gcloud(_base(*args, f"--description={r.description}"), r.name)


def _instance(r: c.Instance, s: GcpSettings) -> Gcloud:
    disk = r.disks[0].initialize_params
    image_project, _, family = disk.source_image.removeprefix("projects/").partition("/global/images/family/")
    nic = r.network_interfaces[0]
    metadata = ",".join(f"{i.key}={i.value}" for i in r.metadata.items)
    scopes = ",".join(r.service_accounts[0].scopes)
    return Gcloud(_base(
        "instances", "create", r.name, f"--zone={s.zone}", f"--machine-type={_last(r.machine_type)}", "--can-ip-forward",
        f"--image-project={image_project}", f"--image-family={family}", f"--boot-disk-size={disk.disk_size_gb}GB",
        f"--subnet={_last(nic.subnetwork)}", f"--private-network-ip={nic.network_i_p}", f"--tags={','.join(r.tags.items)}",
        f"--labels={_labels(r.labels)}", f"--metadata={metadata}", f"--scopes={scopes}",
    ), r.name)


def _http_health_check(r: HttpHealthCheck) -> Gcloud:
    return Gcloud(_base("http-health-checks", "create", r.name, f"--host={r.host}", f"--request-path={r.request_path}", f"--port={r.port}",
                        f"--description={r.description}"), r.name)


def _forwarding_rule(r: c.ForwardingRule, s: GcpSettings, address: str, labels: dict[str, str]) -> list[Gcloud]:
    """On the static address the compute stage reserved, named (its IP may not be known yet)."""
    target = f"--target-pool={_last(r.target)}" if r.target else f"--backend-service={_last(r.backend_service)}"
    return [Gcloud(_base("forwarding-rules", "create", r.name, f"--region={s.region}", f"--address={address}",
                         f"--ip-protocol={r.I_p_protocol}", f"--ports={r.port_range}", f"--load-balancing-scheme={r.load_balancing_scheme}",
                         target, f"--description={r.description}"), r.name),
            Gcloud(_base("forwarding-rules", "update", r.name, f"--region={s.region}", f"--update-labels={_labels(labels)}"))]


def _node_port(name: str, config: Config, topo: Topology) -> list[Made]:
    rule = res.node_port_rule(config, topo, name, 30000)
    return [Made(name, Gcloud(_base("firewall-rules", "describe", name)), (Gcloud(_base("firewall-rules", "create", name, f"--network={_last(rule.resource.network)}", "--direction=INGRESS",
                         f"--allow=tcp:${{{NODE_PORT}}}", f"--source-ranges={','.join(rule.resource.source_ranges)}",
                         f"--target-tags={','.join(rule.resource.target_tags)}", f"--description={rule.resource.description}"), name),))]


def _node_api(config: Config, topo: Topology) -> Made:
    """The API port opened to the nodes' external addresses: taken from the state once compute has
    recorded them, else from the NODE_API_SOURCES variable the script fills from the instances."""
    known = [n.external_ip for n in topo.nodes if n.external_ip]
    rule = res.node_api_rule(config, topo, known if len(known) == len(topo.nodes) else ["192.0.2.1"])
    create = _firewall(rule.resource)
    if len(known) != len(topo.nodes):
        create = Gcloud(tuple(f"--source-ranges=${{{NODE_API_SOURCES}}}" if a.startswith("--source-ranges=") else a for a in create.argv), create.creates)
    return Made(rule.name, Gcloud(_base("firewall-rules", "describe", rule.name)), (create,))


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in dict(labels).items())


def _last(url: str) -> str:
    return url.rsplit("/", 1)[-1]
