"""Which validator serves which collection and action, and the fields GCE derives on reads."""

from __future__ import annotations

import copy
from collections.abc import Callable

from . import kinds_lb, kinds_net, kinds_vm
from .model import DELETING, Change, Prepared, Record, View
from .paths import Scope, url

Insert = Callable[[View, Scope, dict], Prepared]
Action = Callable[[View, Record, dict], Change]
Teardown = Callable[[View, Record], Callable[[], None]]

INSERTS: dict[str, Insert] = {
    "networks": kinds_net.network,
    "subnetworks": kinds_net.subnetwork,
    "firewalls": kinds_net.firewall,
    "routes": kinds_net.route,
    "addresses": kinds_net.address,
    "instances": kinds_vm.instance,
    "httpHealthChecks": kinds_lb.http_health_check,
    "healthChecks": kinds_lb.health_check,
    "targetPools": kinds_lb.target_pool,
    "instanceGroups": kinds_lb.instance_group,
    "backendServices": kinds_lb.backend_service,
    "forwardingRules": kinds_lb.forwarding_rule,
}

ACTIONS: dict[tuple[str, str], Action] = {
    ("instances", "setMetadata"): kinds_vm.set_metadata,
    ("targetPools", "addInstance"): kinds_lb.add_instance,
    ("instanceGroups", "addInstances"): kinds_lb.add_instances,
    ("addresses", "setLabels"): kinds_net.set_labels,
    ("forwardingRules", "setLabels"): kinds_net.set_labels,
}

# slow work a delete does off the request thread (the backing removes the machine)
TEARDOWNS: dict[str, Teardown] = {"instances": kinds_vm.teardown}


def render(record: Record, users: list[Record]) -> dict:
    """The resource as a read returns it, with the fields GCE derives from other resources."""
    body = copy.deepcopy(record.body)
    links = [url(user.path) for user in users]
    if record.collection in ("addresses", "disks") and links:
        body["users"] = links
    if record.collection == "addresses":
        body["status"] = "IN_USE" if links else "RESERVED"
    if record.collection == "networks":
        body["subnetworks"] = [url(u.path) for u in users if u.collection == "subnetworks"]
    if record.collection == "targetPools":
        body["instances"] = [url(path) for path in record.members]
    if record.collection == "instanceGroups":
        body["size"] = len(record.members)
    if record.collection == "instances" and record.state == DELETING:
        body["status"] = "STOPPING"
    return body
