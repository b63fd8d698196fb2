"""The REST surface: which method and path does what, and the shapes of reads.

Paths are those google-cloud-compute 1.57 sends (docs/UPSTREAM.md "The Compute Engine client": Paths).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import catalog, filters, kinds, kinds_power
from .errors import (
    ApiError,
    OpError,
    guest_attribute_missing,
    invalid,
    not_found,
    policy_violated,
)
from .paths import Scope, url
from .rules import fingerprint, integer, one_of
from .specs import SPECS
from .store import Store

_PREFIX = r"^/compute/v1/projects/(?P<project>[^/]+)"
_SCOPE = r"(?P<scope>global|regions/[^/]+|zones/[^/]+)"
_COLLECTION = "(?P<collection>" + "|".join(SPECS) + ")"
_NAME = r"(?P<name>[^/]+)"


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it."""

    params: dict[str, str]  # from the path
    query: dict[str, str]
    body: dict
    fail: OpError | None  # an injected error the operation must end with


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[[Api, Call], dict]
    mutating: bool = False
    own_project: bool = True  # False: another project's resources (public images)


class Api:
    def __init__(self, store: Store, project_metadata: dict[str, str], org_policies: frozenset[str] = frozenset()) -> None:
        self.store = store
        self._metadata = [{"key": k, "value": v} for k, v in project_metadata.items()]
        self._policies = org_policies

    def route(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        for route in ROUTES:
            match = route.pattern.match(path)
            if match and route.method == method:
                return route, match.groupdict()
        raise ApiError(404, f"The requested URL {path} was not found on this server.", "notFound")

    def call(self, route: Route, call: Call) -> dict:
        if route.own_project and call.params["project"] != self.store.project:
            raise not_found(f"projects/{call.params['project']}")
        return route.handler(self, call)

    # -- catalog reads --

    def project(self, call: Call) -> dict:
        metadata = {"kind": "compute#metadata", "items": self._metadata, "fingerprint": fingerprint(self._metadata)}
        return {
            "kind": "compute#project",
            "id": catalog.stable_id(self.store.project),
            "name": self.store.project,
            "selfLink": url(f"projects/{self.store.project}"),
            "commonInstanceMetadata": metadata,
            "defaultNetworkTier": "PREMIUM",
            "quotas": self._quotas("", project=True),  # project metrics count every region
        }

    def _quotas(self, region: str, project: bool) -> list[dict]:
        """The project's quotas (projects.get) or a region's (regions.get), with their usage."""
        used = self.store.usage(region)
        shown = {m: limit for m, limit in self.store.quotas.items() if (m in catalog.PROJECT_METRICS) == project}
        return [{"metric": m, "limit": limit, "usage": used[m]} for m, limit in shown.items()]

    def region(self, call: Call) -> dict:
        name, project = call.params["region"], self.store.project
        if name not in catalog.ZONES:
            raise not_found(f"projects/{project}/regions/{name}")
        return {
            "kind": "compute#region",
            "id": catalog.stable_id(name),
            "name": name,
            "status": "UP",
            "zones": [url(f"projects/{project}/zones/{zone}") for zone in catalog.ZONES[name]],
            "quotas": self._quotas(name, project=False),
            "selfLink": url(f"projects/{project}/regions/{name}"),
        }

    def machine_type(self, call: Call) -> dict:
        zone, name = call.params["zone"], call.params["name"]
        found = catalog.machine_type(self.store.project, zone, name)
        if found is None:
            raise not_found(f"projects/{self.store.project}/zones/{zone}/machineTypes/{name}")
        return found

    def image_family(self, call: Call) -> dict:
        project, family = call.params["project"], call.params["family"]
        found = catalog.image(project, f"family/{family}")
        if found is None:
            raise not_found(f"projects/{project}/global/images/family/{family}")
        return found

    # -- resources --

    def list(self, call: Call) -> dict:
        scope, collection = self._scope(call), call.params["collection"]
        items, more = _page(self._matching(collection, call, scope), call.query)
        link = f"projects/{self.store.project}/{scope.path}/{collection}"
        return {"kind": f"{SPECS[collection].kind}List", "id": link, "items": items, "selfLink": url(link), **more}

    def aggregated(self, call: Call) -> dict:
        collection = call.params["collection"]
        spec = SPECS[collection]
        if not spec.aggregated:
            raise not_found(f"projects/{self.store.project}/aggregated/{collection}")
        items, more = _page(self._matching(collection, call), call.query)
        scoped: dict[str, dict[str, list]] = {}
        for item in items:
            where = f"{spec.scope}/{item[spec.scope.removesuffix('s')].rsplit('/', 1)[1]}"
            scoped.setdefault(where, {collection: []})[collection].append(item)
        link = f"projects/{self.store.project}/aggregated/{collection}"
        return {"kind": f"{spec.kind}AggregatedList", "id": link, "items": scoped, "selfLink": url(link), **more}

    def get(self, call: Call) -> dict:
        return self.store.get(call.params["collection"], self._scope(call), call.params["name"])

    def insert(self, call: Call) -> dict:
        collection = call.params["collection"]
        if collection not in kinds.INSERTS:
            raise ApiError(404, f"fakegce does not serve {collection}.insert.", "notFound")
        if collection == "instances":
            self._check_os_login((call.body.get("metadata") or {}).get("items"))
        return self.store.insert(collection, self._scope(call), call.body, _request_id(call.query), call.fail)

    def delete(self, call: Call) -> dict:
        collection, name = call.params["collection"], call.params["name"]
        return self.store.delete(collection, self._scope(call), name, _request_id(call.query), call.fail)

    def act(self, call: Call) -> dict:
        collection, verb = call.params["collection"], call.params["verb"]
        if (collection, verb) not in kinds.ACTIONS and (collection, verb) not in kinds_power.POWER:
            raise ApiError(404, f"{collection} has no method {verb}.", "notFound")
        if (collection, verb) == ("instances", "setMetadata"):
            self._check_os_login(call.body.get("items"))
        scope, name = self._scope(call), call.params["name"]
        return self.store.act(collection, scope, name, verb, call.body, _request_id(call.query), call.fail)

    def _check_os_login(self, items: object) -> None:
        """compute.requireOsLogin, enforced: "Update requests to set enable-oslogin to false in
        instance or project metadata are rejected" (cloud.google.com/compute/docs/oslogin/
        manage-oslogin-in-an-org, "Enabling OS Login using an organization policy")."""
        if "compute.requireOsLogin" not in self._policies or not isinstance(items, list):
            return
        if any(isinstance(i, dict) and i.get("key") == "enable-oslogin" and str(i.get("value", "")).upper() == "FALSE" for i in items):
            raise policy_violated("compute.requireOsLogin", self.store.project, "Metadata key 'enable-oslogin' cannot be set to FALSE.")

    def guest_attributes(self, call: Call) -> dict:
        """hostkeys/ as the guest agent publishes it: 404 until it has, or if never enabled."""
        scope, name = self._scope(call), call.params["name"]
        query_path, variable = call.query.get("queryPath", ""), call.query.get("variableKey", "")
        keys = self.store.host_keys(scope, name)
        wanted = variable or query_path
        namespace, _, key = wanted.partition("/")
        if not keys or namespace != "hostkeys" or (variable and key not in keys):
            raise guest_attribute_missing(wanted)
        link = url(f"projects/{self.store.project}/{scope.path}/instances/{name}/guestAttributes/{wanted}")
        if variable:
            return {
                "kind": "compute#guestAttributes",
                "selfLink": link,
                "variableKey": variable,
                "variableValue": keys[key],
            }
        entries = [{"namespace": "hostkeys", "key": k, "value": v} for k, v in keys.items()]
        return {
            "kind": "compute#guestAttributes",
            "selfLink": link,
            "queryPath": query_path,
            "queryValue": {"items": entries},
        }

    def list_instances(self, call: Call) -> dict:
        """instanceGroups.listInstances: a read sent as a POST (no operation), paged like a list."""
        scope, group = self._scope(call), call.params["name"]
        state = one_of("request.instanceState", call.body.get("instanceState", "ALL"), ("ALL", "RUNNING"))
        if call.query.get("filter"):
            raise invalid("filter", call.query["filter"], "fakegce does not filter listInstances; use instanceState.")
        members = self.store.members("instanceGroups", scope, group)
        shown = [{"instance": m["selfLink"], "status": m["status"]} for m in members]
        items, more = _page([m for m in shown if state == "ALL" or m["status"] == "RUNNING"], call.query)
        link = f"projects/{self.store.project}/{scope.path}/instanceGroups/{group}/listInstances"
        listed = {"kind": "compute#instanceGroupsListInstances", "id": link, "selfLink": url(link), **more}
        return {**listed, "items": items} if items else listed

    # -- operations --

    def operation(self, call: Call) -> dict:
        return self.store.operation(Scope.parse(call.params["scope"]).check(), call.params["name"])

    def wait(self, call: Call) -> dict:
        return self.store.wait(Scope.parse(call.params["scope"]).check(), call.params["name"])

    def _scope(self, call: Call) -> Scope:
        """The request's scope, if Google has it and the collection lives in such scopes."""
        scope = Scope.parse(call.params["scope"]).check()
        collection = call.params["collection"]
        if SPECS[collection].scope != scope.kind:
            raise not_found(f"projects/{self.store.project}/{scope.path}/{collection}")
        return scope

    def _matching(self, collection: str, call: Call, scope: Scope | None = None) -> list[dict]:
        wanted = filters.parse(call.query.get("filter"))
        return [item for item in self.store.visible(collection, scope) if wanted(item)]


def _page(items: list[dict], query: dict[str, str]) -> tuple[list[dict], dict]:
    """One page of `items` (maxResults, pageToken) and the token for the next, if any."""
    size = integer("maxResults", query.get("maxResults", 500), 0, 500) or 500
    start = integer("pageToken", query.get("pageToken") or 0, 0, len(items))
    end = start + size
    return items[start:end], ({"nextPageToken": str(end)} if end < len(items) else {})


def _request_id(query: dict[str, str]) -> str | None:
    """The requestId, which GCE accepts only as a non-zero UUID."""
    value = query.get("requestId")
    if value is None:
        return None
    try:
        parsed: uuid.UUID | None = uuid.UUID(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.int == 0:
        raise invalid("requestId", value, "The request ID must be a valid UUID other than the zero UUID.")
    return str(parsed)


def _route(method: str, pattern: str, handler: Callable[[Api, Call], dict], **flags: bool) -> Route:
    return Route(method, re.compile(_PREFIX + pattern + "$"), handler, **flags)


ROUTES = (
    _route("GET", "", Api.project),
    _route("GET", r"/regions/(?P<region>[^/]+)", Api.region),
    _route("GET", r"/zones/(?P<zone>[^/]+)/machineTypes/" + _NAME, Api.machine_type),
    _route("GET", r"/global/images/family/(?P<family>[^/]+)", Api.image_family, own_project=False),
    _route("GET", r"/aggregated/" + _COLLECTION, Api.aggregated),
    _route("GET", f"/{_SCOPE}/operations/{_NAME}", Api.operation),
    _route("POST", f"/{_SCOPE}/operations/{_NAME}/wait", Api.wait),
    _route("GET", f"/{_SCOPE}/{_COLLECTION}", Api.list),
    _route("POST", f"/{_SCOPE}/{_COLLECTION}", Api.insert, mutating=True),
    _route("GET", f"/{_SCOPE}/{_COLLECTION}/{_NAME}", Api.get),
    _route("DELETE", f"/{_SCOPE}/{_COLLECTION}/{_NAME}", Api.delete, mutating=True),
    _route("GET", f"/{_SCOPE}/(?P<collection>instances)/{_NAME}/getGuestAttributes", Api.guest_attributes),
    _route("POST", f"/{_SCOPE}/(?P<collection>instanceGroups)/{_NAME}/listInstances", Api.list_instances),
    _route("POST", f"/{_SCOPE}/{_COLLECTION}/{_NAME}/(?P<verb>[A-Za-z]+)", Api.act, mutating=True),
)
