"""The collections the fake serves, and the fields GCE adds to every resource it stores."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .model import Record, View
from .paths import Scope, url


@dataclass(frozen=True)
class Spec:
    scope: str  # "global" | "regions" | "zones"
    kind: str  # the JSON `kind` of one resource
    noun: str  # as in "The <noun> resource '...' is already being used by '...'"
    aggregated: bool = False  # served under aggregated/<collection>


SPECS: dict[str, Spec] = {
    "networks": Spec("global", "compute#network", "network"),
    "firewalls": Spec("global", "compute#firewall", "firewall"),
    "routes": Spec("global", "compute#route", "route"),
    "httpHealthChecks": Spec("global", "compute#httpHealthCheck", "httpHealthCheck"),
    "subnetworks": Spec("regions", "compute#subnetwork", "subnetwork", aggregated=True),
    "addresses": Spec("regions", "compute#address", "address", aggregated=True),
    "targetPools": Spec("regions", "compute#targetPool", "targetPool", aggregated=True),
    "healthChecks": Spec("regions", "compute#healthCheck", "healthCheck"),
    "backendServices": Spec("regions", "compute#backendService", "backendService"),
    "forwardingRules": Spec("regions", "compute#forwardingRule", "forwardingRule", aggregated=True),
    "instances": Spec("zones", "compute#instance", "instance", aggregated=True),
    "instanceGroups": Spec("zones", "compute#instanceGroup", "instanceGroup", aggregated=True),
    "disks": Spec("zones", "compute#disk", "disk", aggregated=True),
}


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_record(view: View, scope: Scope, collection: str, body: dict, served: dict, **fields: object) -> Record:
    """A record for `body` as GCE would store it: the request's fields, then the server's.

    `served` holds the fields the kind validated and normalised; `fields` go to the Record.
    The name was checked before the kind ran (store.insert, or the kind for a boot disk).
    """
    name = body["name"]
    path = f"projects/{view.project}/{scope.path}/{collection}/{name}"
    stored = {**body, **served}
    stored.update(
        kind=SPECS[collection].kind, id=view.new_id(), creationTimestamp=timestamp(), name=name, selfLink=url(path)
    )
    if scope.kind != "global":
        stored[scope.kind.removesuffix("s")] = url(f"projects/{view.project}/{scope.path}")
    return Record(path, collection, scope, stored, **fields)  # type: ignore[arg-type]
