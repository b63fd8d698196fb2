"""Networking kinds: networks, subnetworks, firewalls, routes, addresses (and internal IPs)."""

from __future__ import annotations

import ipaddress
from functools import partial

from .errors import ApiError, OpError, invalid, not_found
from .model import Change, Prepared, Record, View
from .paths import Scope, parse_ref, url
from .rules import (
    check_labels,
    check_name,
    check_ports,
    cidr,
    fingerprint,
    integer,
    ipv4,
    need,
    one_of,
)
from .specs import new_record

_PROTOCOLS = ("tcp", "udp", "icmp", "esp", "ah", "sctp", "ipip", "all")
_PORTED = ("tcp", "udp", "sctp")
_NEXT_HOPS = ("nextHopIp", "nextHopInstance", "nextHopGateway", "nextHopIlb", "nextHopVpnTunnel")


def network(view: View, scope: Scope, body: dict) -> Prepared:
    if "IPv4Range" in body or body.get("autoCreateSubnetworks"):
        raise ApiError(400, "fakegce models custom-mode networks only: send autoCreateSubnetworks=false.")
    routing = body.get("routingConfig") or {"routingMode": "REGIONAL"}
    one_of("resource.routingConfig.routingMode", routing.get("routingMode"), ("REGIONAL", "GLOBAL"))
    served = {
        "autoCreateSubnetworks": False,
        "mtu": integer("resource.mtu", body.get("mtu", 1460), 1300, 8896),
        "routingConfig": routing,
    }
    return Prepared(new_record(view, scope, "networks", body, served))


def subnetwork(view: View, scope: Scope, body: dict) -> Prepared:
    net = view.use("resource.network", body.get("network"), "networks")
    wanted = cidr("resource.ipCidrRange", need(body, "ipCidrRange"))
    if not 8 <= wanted.prefixlen <= 29:
        raise invalid("resource.ipCidrRange", wanted, "The prefix length must be between /8 and /29.")
    for other in subnets_of(view, net):
        if wanted.overlaps(ipaddress.IPv4Network(other.body["ipCidrRange"])):
            why = f"Invalid IPCidrRange: {wanted} conflicts with existing subnetwork '{other.name}'"
            raise invalid("resource.ipCidrRange", wanted, f"{why} in region '{other.scope.name}'.")
    served = {"network": url(net.path), "ipCidrRange": str(wanted), "gatewayAddress": str(wanted[1])}
    return Prepared(new_record(view, scope, "subnetworks", body, served, uses=(net.path,)))


def firewall(view: View, scope: Scope, body: dict) -> Prepared:
    net = view.use("resource.network", body.get("network") or "global/networks/default", "networks")
    action = _firewall_action(body)
    direction = one_of("resource.direction", body.get("direction", "INGRESS"), ("INGRESS", "EGRESS"))
    ranges_key = "sourceRanges" if direction == "INGRESS" else "destinationRanges"
    ranges = [
        str(cidr(f"resource.{ranges_key}[{i}]", r, strict=False)) for i, r in enumerate(body.get(ranges_key) or [])
    ]
    if not (ranges or body.get("sourceTags") or body.get("sourceServiceAccounts")):
        ranges = ["0.0.0.0/0"]
    for i, tag in enumerate(body.get("targetTags") or []):
        check_name(tag, f"resource.targetTags[{i}]")
    served = {
        "network": url(net.path),
        action: [_protocol_rule(f"resource.{action}[{i}]", rule) for i, rule in enumerate(body[action])],
        "direction": direction,
        ranges_key: ranges,
        "priority": integer("resource.priority", body.get("priority", 1000), 0, 65535),
    }
    return Prepared(new_record(view, scope, "firewalls", body, served, uses=(net.path,)))


def route(view: View, scope: Scope, body: dict) -> Prepared:
    net = view.use("resource.network", body.get("network"), "networks")
    dest = cidr("resource.destRange", need(body, "destRange"))
    subnets = subnets_of(view, net)
    for subnet in subnets:
        if dest.subnet_of(ipaddress.IPv4Network(subnet.body["ipCidrRange"])):
            raise invalid("resource.destRange", dest, f"The destination range is inside subnetwork '{subnet.name}'.")
    hops = [key for key in _NEXT_HOPS if body.get(key)]
    if len(hops) != 1:
        raise ApiError(400, f"Exactly one next hop must be specified, got {hops or 'none'}.")
    served = {
        "network": url(net.path),
        "destRange": str(dest),
        "priority": integer("resource.priority", body.get("priority", 1000), 0, 65535),
        **_next_hop(view, hops[0], body[hops[0]], subnets),
    }
    return Prepared(new_record(view, scope, "routes", body, served, uses=(net.path,)))


# addresses and forwardingRules: "Labels for this resource. These can only be added or modified by
# the setLabels method." (https://cloud.google.com/compute/docs/reference/rest/v1/addresses,
# .../rest/v1/forwardingRules): labels sent on insert are not kept; addresses.setLabels and
# forwardingRules.setLabels (.../rest/v1/addresses/setLabels) set them, with the labelFingerprint
# last read (a stale one: 412 conditionNotMet, .../compute_v1.types.RegionSetLabelsRequest).
def address(view: View, scope: Scope, body: dict) -> Prepared:
    kind = one_of("resource.addressType", body.get("addressType", "EXTERNAL"), ("EXTERNAL", "INTERNAL"))
    check_labels(body.get("labels"))
    served = {"addressType": kind, **unlabelled(), "networkTier": "PREMIUM"}
    if kind == "INTERNAL":
        subnet = view.use("resource.subnetwork", body.get("subnetwork"), "subnetworks")
        same_region(subnet, scope, "resource.subnetwork")
        served |= {
            "subnetwork": url(subnet.path),
            "address": internal_ip(view, subnet, body.get("address"), "resource.address"),
        }
        return Prepared(new_record(view, scope, "addresses", body, served, uses=(subnet.path,)))
    served["address"] = _external_ip(view, scope, body.get("address"))
    return Prepared(new_record(view, scope, "addresses", body, served, quota={"STATIC_ADDRESSES": 1.0}))


def unlabelled() -> dict:
    """The labels of a kind whose labels only setLabels sets, as an insert leaves them."""
    return {"labels": {}, "labelFingerprint": fingerprint({})}


def set_labels(view: View, record: Record, body: dict) -> Change:
    """<addresses|forwardingRules>.setLabels: replaces every label; the fingerprint must be the
    current one, now and when the operation is DONE."""
    expected = record.body["labelFingerprint"]
    if body.get("labelFingerprint") != expected:
        raise ApiError(412, "Labels fingerprint either invalid or resource labels have changed", "conditionNotMet")
    labels = check_labels(body.get("labels"), "request.labels")
    return partial(_replace_labels, expected, labels)


def _replace_labels(expected: str, labels: dict[str, str], record: Record) -> OpError | None:
    if record.body["labelFingerprint"] != expected:
        return OpError("CONDITION_NOT_MET", "Labels fingerprint either invalid or resource labels have changed", 412)
    record.body.update(labels=labels, labelFingerprint=fingerprint(expected, labels))
    return None


def reserved_address(view: View, scope: Scope, field: str, value: object, shared_with: str) -> Record:
    """The READY external address of the region that `value` names, by IP or by URL.

    It may already be used only by resources of the collection `shared_with`.
    """
    if isinstance(value, str) and "/" not in value:
        ip = str(ipv4(field, value))
        holders = [r for r in view.records("addresses") if r.body["address"] == ip and r.scope.region == scope.region]
        if not holders or holders[0].body["addressType"] != "EXTERNAL":
            raise invalid(field, value, f"The IP address is not reserved in region '{scope.region}'.")
        value = url(holders[0].path)
    record = view.use(field, value, "addresses")
    same_region(record, scope, field)
    if any(user.collection != shared_with for user in view.users(record.path)):
        raise invalid(field, record.body["address"], "IP address is already being used by another resource.")
    return record


def subnets_of(view: View, net: Record) -> list[Record]:
    return [r for r in view.records("subnetworks") if r.body["network"] == url(net.path)]


def same_region(record: Record, scope: Scope, field: str) -> None:
    """Refuse a reference to a resource outside the region of `scope`."""
    if record.scope.region != scope.region:
        raise invalid(field, url(record.path), f"The resource must be in region '{scope.region}'.")


def internal_ip(view: View, subnet: Record, wanted: object, field: str) -> str:
    """`wanted` if it is a free usable address of the subnet, else the first free one."""
    usable = ipaddress.IPv4Network(subnet.body["ipCidrRange"])
    reserved = {usable[0], usable[1], usable[-2], usable[-1]}  # network, gateway, GCE's, broadcast
    taken = _internal_ips_in(view, url(subnet.path))
    if wanted:
        ip = ipv4(field, wanted)
        if ip not in usable or ip in reserved:
            raise invalid(field, ip, f"The address is not in the usable range of subnetwork '{subnet.name}'.")
        if str(ip) in taken:
            raise invalid(field, ip, "IP address is already being used by another resource.")
        return str(ip)
    free = (str(ip) for ip in usable if ip not in reserved and str(ip) not in taken)
    chosen = next(free, "")
    if not chosen:
        raise ApiError(400, f"IP space of subnetwork '{subnet.name}' is exhausted.", "ipSpaceExhausted")
    return chosen


def _internal_ips_in(view: View, subnet_url: str) -> set[str]:
    nics = [nic for r in view.records("instances") for nic in r.body["networkInterfaces"]]
    taken = {nic["networkIP"] for nic in nics if nic["subnetwork"] == subnet_url}
    return taken | {r.body["address"] for r in view.records("addresses") if r.body.get("subnetwork") == subnet_url}


def _external_ip(view: View, scope: Scope, wanted: object) -> str:
    if not wanted:
        return view.allocate_external_ip()
    ip = str(ipv4("resource.address", wanted))
    if any(r.body["address"] == ip for r in view.records("addresses") if r.scope == scope):
        raise invalid("resource.address", ip, "IP address is already reserved.")
    return ip


def _firewall_action(body: dict) -> str:
    present = [key for key in ("allowed", "denied") if body.get(key)]
    if len(present) != 1:
        raise ApiError(400, "Exactly one of 'resource.allowed' or 'resource.denied' must be specified.")
    return present[0]


def _protocol_rule(field: str, rule: dict) -> dict:
    protocol = rule.get("IPProtocol")
    if not protocol:
        raise ApiError(400, f"Required field '{field}.IPProtocol' not specified", "required")
    if protocol not in _PROTOCOLS and not (str(protocol).isdigit() and int(protocol) <= 255):
        raise invalid(f"{field}.IPProtocol", protocol, f"Must be a protocol number or one of {', '.join(_PROTOCOLS)}.")
    ports = rule.get("ports") or []
    if ports and protocol not in _PORTED:
        raise invalid(f"{field}.ports", ports, "Ports are allowed only for tcp, udp and sctp.")
    return {"IPProtocol": protocol, **({"ports": check_ports(f"{field}.ports", ports)} if ports else {})}


def _next_hop(view: View, key: str, value: object, subnets: list[Record]) -> dict:
    field = f"resource.{key}"
    if key == "nextHopIp":
        ip = ipv4(field, value)
        if not any(ip in ipaddress.IPv4Network(s.body["ipCidrRange"]) for s in subnets):
            raise invalid(field, ip, "The next hop must be inside a subnetwork of the route's network.")
        return {key: str(ip)}
    if key == "nextHopInstance":
        return {key: url(view.use(field, value, "instances").path)}
    if key == "nextHopGateway":
        gateway = parse_ref(field, value, view.project, "gateways")
        if gateway.name != "default-internet-gateway":
            raise not_found(gateway.path)
        return {key: url(gateway.path)}
    raise ApiError(400, f"fakegce does not model '{field}'.")
