"""Load-balancing kinds: health checks, target pools, instance groups, backend services,
forwarding rules, and the addInstance(s) actions."""

from __future__ import annotations

from functools import partial

from .errors import ApiError, OpError, invalid
from .kinds_net import reserved_address, same_region, unlabelled
from .model import Change, Prepared, Record, View
from .paths import Scope, url
from .rules import check_labels, check_name, check_ports, integer, need, one_of, probe_timing
from .specs import new_record

_DETAILS = {
    "TCP": "tcpHealthCheck",
    "SSL": "sslHealthCheck",
    "HTTP": "httpHealthCheck",
    "HTTPS": "httpsHealthCheck",
    "HTTP2": "http2HealthCheck",
    "GRPC": "grpcHealthCheck",
}
_SCHEMES = ("EXTERNAL", "INTERNAL", "EXTERNAL_MANAGED", "INTERNAL_MANAGED")
_PASSTHROUGH = ("EXTERNAL", "INTERNAL")
_BS_PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "TCP", "SSL", "UDP", "GRPC", "UNSPECIFIED")
_RULE_PROTOCOLS = ("TCP", "UDP", "ESP", "AH", "SCTP", "ICMP", "L3_DEFAULT")


def http_health_check(view: View, scope: Scope, body: dict) -> Prepared:
    """The legacy global HTTP health check (raw REST only; target pools need it)."""
    served = {
        "port": integer("resource.port", body.get("port", 80), 1, 65535),
        "requestPath": _request_path("resource.requestPath", body.get("requestPath", "/")),
        **probe_timing(body),
    }
    return Prepared(new_record(view, scope, "httpHealthChecks", body, served))


def health_check(view: View, scope: Scope, body: dict) -> Prepared:
    """A regional health check: `type` and only its matching detail object."""
    kind = one_of("resource.type", need(body, "type"), _DETAILS)
    key = _DETAILS[kind]
    for other in _DETAILS.values():
        if other != key and body.get(other):
            raise invalid(f"resource.{other}", body[other], f"Must be empty for a {kind} health check.")
    detail = dict(body.get(key) or {})
    detail["port"] = integer(
        f"resource.{key}.port", detail.get("port", 443 if kind in ("HTTPS", "HTTP2", "SSL") else 80), 1, 65535
    )
    if "requestPath" in detail:
        _request_path(f"resource.{key}.requestPath", detail["requestPath"])
    return Prepared(new_record(view, scope, "healthChecks", body, {key: detail, **probe_timing(body)}))


def target_pool(view: View, scope: Scope, body: dict) -> Prepared:
    checks = body.get("healthChecks") or []
    if len(checks) > 1:
        raise invalid("resource.healthChecks", checks, "A target pool takes at most one legacy HTTP health check.")
    used = [view.use(f"resource.healthChecks[{i}]", value, "httpHealthChecks") for i, value in enumerate(checks)]
    members = _regional_instances(view, scope, "resource.instances", body.get("instances") or [])
    served = {
        "healthChecks": [url(r.path) for r in used],
        "sessionAffinity": one_of(
            "resource.sessionAffinity", body.get("sessionAffinity", "NONE"), ("NONE", "CLIENT_IP", "CLIENT_IP_PROTO")
        ),
    }
    record = new_record(view, scope, "targetPools", body, served, uses=tuple(r.path for r in used), members=members)
    return Prepared(record)


def add_instance(view: View, record: Record, body: dict) -> Change:
    """targetPools.addInstance: instances of the pool's region join it when the op is DONE."""
    urls = _references(need(body, "instances", "request"))
    paths = _regional_instances(view, record.scope, "request.instances", urls)
    return partial(_join, view, paths)


def instance_group(view: View, scope: Scope, body: dict) -> Prepared:
    net = view.use("resource.network", body["network"], "networks") if body.get("network") else None
    ports = [_named_port(f"resource.namedPorts[{i}]", port) for i, port in enumerate(body.get("namedPorts") or [])]
    served = {"namedPorts": ports, **({"network": url(net.path)} if net else {})}
    record = new_record(view, scope, "instanceGroups", body, served, uses=(net.path,) if net else ())
    return Prepared(record)


def add_instances(view: View, record: Record, body: dict) -> Change:
    """instanceGroups.addInstances: instances of the group's zone and network join it."""
    members = _instances(view, "request.instances", _references(need(body, "instances", "request")))
    for i, member in enumerate(members):
        field = f"request.instances[{i}]"
        if member.scope != record.scope:
            raise invalid(field, url(member.path), f"The instance must be in zone '{record.scope.name}'.")
        network = member.body["networkInterfaces"][0]["network"]
        if record.body.get("network", network) != network:
            raise invalid(field, url(member.path), "The instance is not in the instance group's network.")
    return partial(_join, view, [m.path for m in members])


def backend_service(view: View, scope: Scope, body: dict) -> Prepared:
    scheme = one_of("resource.loadBalancingScheme", body.get("loadBalancingScheme", "EXTERNAL"), _SCHEMES)
    protocol = one_of("resource.protocol", body.get("protocol", "HTTP"), _BS_PROTOCOLS)
    if scheme in _PASSTHROUGH and protocol not in ("TCP", "UDP", "UNSPECIFIED"):
        raise invalid(
            "resource.protocol", protocol, f"A regional {scheme} backend service needs TCP, UDP or UNSPECIFIED."
        )
    checks = [
        view.use(f"resource.healthChecks[{i}]", v, "healthChecks") for i, v in enumerate(need(body, "healthChecks"))
    ]  # type: ignore[arg-type]
    for i, check in enumerate(checks):
        same_region(check, scope, f"resource.healthChecks[{i}]")
    backends = [
        _backend(view, scope, f"resource.backends[{i}]", b, scheme) for i, b in enumerate(body.get("backends") or [])
    ]
    served = {
        "loadBalancingScheme": scheme,
        "protocol": protocol,
        "healthChecks": [url(c.path) for c in checks],
        "backends": [served for served, _ in backends],
    }
    uses = (*(c.path for c in checks), *(group for _, group in backends))
    return Prepared(new_record(view, scope, "backendServices", body, served, uses=uses))


def forwarding_rule(view: View, scope: Scope, body: dict) -> Prepared:
    """A regional forwarding rule to a target pool or a backend service, on a reserved or
    ephemeral address."""
    targets = [key for key in ("target", "backendService") if body.get(key)]
    if len(targets) != 1:
        raise ApiError(400, "Exactly one of 'resource.target' or 'resource.backendService' must be specified.")
    key = targets[0]
    scheme = one_of("resource.loadBalancingScheme", body.get("loadBalancingScheme", "EXTERNAL"), _SCHEMES)
    target = view.use(f"resource.{key}", body[key], "targetPools" if key == "target" else "backendServices")
    same_region(target, scope, f"resource.{key}")
    if key == "backendService" and target.body["loadBalancingScheme"] != scheme:
        raise invalid("resource.loadBalancingScheme", scheme, "Must match the backend service's scheme.")
    check_labels(body.get("labels"))  # validated, not kept: see kinds_net.set_labels
    served = {
        key: url(target.path),
        "IPProtocol": one_of("resource.IPProtocol", body.get("IPProtocol", "TCP"), _RULE_PROTOCOLS),
        "loadBalancingScheme": scheme,
        "networkTier": "PREMIUM",
        **unlabelled(),
        **_rule_ports(body),
    }
    if not body.get("IPAddress"):
        served["IPAddress"] = view.allocate_external_ip()
        record = new_record(
            view, scope, "forwardingRules", body, served, uses=(target.path,), quota={"IN_USE_ADDRESSES": 1.0}
        )
        return Prepared(record)
    address = reserved_address(view, scope, "resource.IPAddress", body["IPAddress"], shared_with="forwardingRules")
    served["IPAddress"] = address.body["address"]
    return Prepared(new_record(view, scope, "forwardingRules", body, served, uses=(target.path, address.path)))


def _join(view: View, paths: list[str], record: Record) -> OpError | None:
    """Add the instances that still exist to a pool or group; a group takes their network."""
    alive = {r.path: r for r in view.records("instances")}
    for path in paths:
        if path in alive and path not in record.members:
            record.members.append(path)
    if record.collection == "instanceGroups" and record.members and "network" not in record.body:
        network = alive[record.members[0]].body["networkInterfaces"][0]["network"]
        record.body["network"] = network
        record.uses += (network.removeprefix(url("")),)
    return None


def _references(entries: object) -> list[object]:
    """The URLs in a request's `[{"instance": url}, ...]`."""
    return [entry.get("instance") if isinstance(entry, dict) else None for entry in entries]  # type: ignore[attr-defined]


def _instances(view: View, field: str, urls: list[object]) -> list[Record]:
    """The READY instances the URLs name."""
    return [view.use(f"{field}[{i}]", value, "instances") for i, value in enumerate(urls)]


def _regional_instances(view: View, scope: Scope, field: str, urls: list[object]) -> list[str]:
    """The paths of the READY instances the URLs name, all in the region of `scope`."""
    members = _instances(view, field, urls)
    for i, member in enumerate(members):
        same_region(member, scope, f"{field}[{i}]")
    return [m.path for m in members]


def _backend(view: View, scope: Scope, field: str, backend: dict, scheme: str) -> tuple[dict, str]:
    group = view.use(f"{field}.group", backend.get("group"), "instanceGroups")
    same_region(group, scope, f"{field}.group")
    mode = one_of(
        f"{field}.balancingMode", backend.get("balancingMode", "UTILIZATION"), ("UTILIZATION", "RATE", "CONNECTION")
    )
    if scheme in _PASSTHROUGH and mode != "CONNECTION":
        raise invalid(f"{field}.balancingMode", mode, "A passthrough load balancer needs balancingMode CONNECTION.")
    return {**backend, "group": url(group.path), "balancingMode": mode}, group.path


def _rule_ports(body: dict) -> dict:
    if body.get("portRange") and body.get("ports"):
        raise ApiError(400, "Only one of 'resource.portRange' or 'resource.ports' may be specified.")
    if body.get("ports"):
        ports = check_ports("resource.ports", body["ports"])
        if len(ports) > 5:
            raise invalid("resource.ports", ports, "At most 5 ports.")
        return {"ports": ports}
    return {"portRange": check_ports("resource.portRange", [body["portRange"]])[0]} if body.get("portRange") else {}


def _named_port(field: str, port: dict) -> dict:
    return {
        "name": check_name(port.get("name"), f"{field}.name"),
        "port": integer(f"{field}.port", port.get("port"), 1, 65535),
    }


def _request_path(field: str, path: object) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise invalid(field, path, "The request path must start with '/'.")
    return path
