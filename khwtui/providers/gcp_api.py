"""A thin async layer over the sync google-cloud-compute clients, for the gcp provider.

Why it exists (docs/UPSTREAM.md "The Compute Engine client"): the library is sync-only, so every call runs in a
small thread pool of its own (8 threads: the requests pool keeps 10 connections per host, and
asyncio's default executor is shared and only cpu+4 threads wide). Operation waits block for as
long as the operation runs, so they get a pool of their own that grows a thread per wait in
flight (up to WAIT_THREADS, with as many pooled connections): a wait never queues behind other
waits or calls; `ExtendedOperation.result()`
ignores `api_endpoint`, so operations are waited on here with the zone/region/global operations
clients built with the same options; 429 and 5xx are retried with google.api_core's jittered
exponential backoff, and every insert or delete carries one requestId for all its retries, so a
retried call whose first reply was lost is carried out once.

Credentials: Application Default Credentials, except that an `api_endpoint` on a loopback
address (127.0.0.0/8: the test fake) gets anonymous credentials, so no test ever needs or
reads real ones.
"""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
import re
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlparse

import google.auth
import requests
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.api_core.retry import if_exception_type
from google.api_core.retry_async import AsyncRetry
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import AuthorizedSession
from google.cloud import compute_v1
from requests.adapters import HTTPAdapter

from khwtui.core import crashpoints
from khwtui.core.errors import OperationError, UserError

MAX_IN_FLIGHT = 8
WAIT_THREADS = 256  # operation waits at once: far above any cluster's operations in flight
CALL_TIMEOUT = 60.0  # one HTTP request
WAIT_CALL_TIMEOUT = 150.0  # operations.wait blocks up to ~2 min on the server
OPERATION_DEADLINE = 900.0  # one operation, start to DONE
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_BASE = "https://compute.googleapis.com"
# 429 and 5xx: jittered exponential backoff (0.5 s doubling to 16 s) within 2 minutes
TRANSIENT_RETRY = AsyncRetry(
    predicate=if_exception_type(
        exceptions.TooManyRequests,
        exceptions.InternalServerError,
        exceptions.BadGateway,
        exceptions.ServiceUnavailable,
        exceptions.GatewayTimeout,
    ),
    initial=0.5,
    maximum=16.0,
    multiplier=2.0,
    timeout=120.0,
)
# what a call can raise once retries are spent: the API's errors, the network's, the credentials'
CALL_ERRORS = (exceptions.GoogleAPICallError, exceptions.RetryError, requests.RequestException, GoogleAuthError)
QUOTA = re.compile(r"Quota '([A-Z0-9_]+)' exceeded")
# an organization policy refusing a request: 412 conditionNotMet, "Constraint constraints/<name>
# violated for project projects/<id>. ..." (Compute's wording for every constraint)
POLICY = re.compile(r"Constraint '?constraints/([A-Za-z0-9_.]+)'? violated")


class GceError(OperationError):
    """A Compute API call or operation failed; the message carries the API's own words."""


class AccessRefused(UserError, GceError):
    """The API cannot be used at all (credentials, the API's state, the project, the network):
    no stage can fix that, so the run stops with exit 2 and the fix (the user's kind, first)."""


class OperationFailed(GceError):
    """An accepted operation ended DONE with errors (`errors[].message` in the text)."""

    def __init__(self, message: str, status: int, codes: tuple[str, ...] = ()) -> None:
        self.status = status
        self.codes = codes
        super().__init__(message)

    @property
    def transient(self) -> bool:
        """GCE's "Internal error. Please try again": the same call may well succeed."""
        return self.status >= 500 or bool(set(self.codes) & TRANSIENT_OPERATION_CODES)


# operation errors worth another attempt (Compute API "Handling API errors": retry 5xx and
# rate-limit errors with exponential backoff)
TRANSIENT_OPERATION_CODES = {"INTERNAL_ERROR", "SERVICE_UNAVAILABLE", "RATE_LIMIT_EXCEEDED", "RESOURCE_OPERATION_RATE_EXCEEDED"}
OPERATION_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0)  # seconds before each new attempt


@dataclass(frozen=True)
class Kind:
    """One Compute collection: the client serving it, its scope, and the request field naming
    one resource (`arg`; an insert sends the body as `<arg>_resource`)."""

    noun: str
    collection: str
    client: str
    scope: str  # global | region | zone
    arg: str


KINDS: dict[str, Kind] = {
    k.collection: k
    for k in (
        Kind("network", "networks", "NetworksClient", "global", "network"),
        Kind("subnet", "subnetworks", "SubnetworksClient", "region", "subnetwork"),
        Kind("firewall", "firewalls", "FirewallsClient", "global", "firewall"),
        Kind("route", "routes", "RoutesClient", "global", "route"),
        Kind("address", "addresses", "AddressesClient", "region", "address"),
        Kind("instance", "instances", "InstancesClient", "zone", "instance"),
        Kind("disk", "disks", "DisksClient", "zone", "disk"),
        Kind("forwarding rule", "forwardingRules", "ForwardingRulesClient", "region", "forwarding_rule"),
        Kind("target pool", "targetPools", "TargetPoolsClient", "region", "target_pool"),
        Kind("backend service", "backendServices", "RegionBackendServicesClient", "region", "backend_service"),
        Kind("health check", "healthChecks", "RegionHealthChecksClient", "region", "health_check"),
        Kind("legacy health check", "httpHealthChecks", "", "global", "http_health_check"),
        Kind("instance group", "instanceGroups", "InstanceGroupsClient", "zone", "instance_group"),
    )
}


def is_loopback(endpoint: str) -> bool:
    """Whether `endpoint` is a URL on a literal 127.0.0.0/8 address."""
    try:
        return ipaddress.ip_address(urlparse(endpoint).hostname or "").is_loopback
    except ValueError:
        return False


def credentials(endpoint: str) -> tuple[Credentials, str | None]:
    """(credentials, the project they carry): anonymous only for a loopback endpoint, else ADC.

    Raises google.auth.exceptions.DefaultCredentialsError when no ADC is set up.
    """
    if endpoint and is_loopback(endpoint):
        return AnonymousCredentials(), None
    return google.auth.default(scopes=[CLOUD_PLATFORM])


def describe(error: BaseException) -> str:
    """One line from an API error: the `errors[].message` texts when the API sent them."""
    if isinstance(error, exceptions.RetryError) and error.cause is not None:
        return f"{describe(error.cause)} (still failing after retries)"
    text = str(error) or type(error).__name__
    if isinstance(error, exceptions.GoogleAPICallError):
        messages = [e.get("message", "") if isinstance(e, dict) else getattr(e, "message", "") for e in error.errors or []]
        text = "; ".join(m for m in messages if m) or error.message
    return " ".join(text.split())


def access_problem(error: BaseException, project: str) -> str | None:
    """One line with the fix when `error` means the Compute API cannot be used at all: refused
    credentials (401), the API disabled (403 accessNotConfigured / SERVICE_DISABLED), no such
    project (404 on projects/<id>), or no connection to the endpoint; None otherwise."""
    if isinstance(error, exceptions.RetryError) and error.cause is not None:
        error = error.cause
    detail = describe(error)
    login = "run `gcloud auth application-default login` again, or check GOOGLE_APPLICATION_CREDENTIALS"
    if isinstance(error, (exceptions.Unauthorized, GoogleAuthError)):
        return f"Google credentials were refused ({detail}); fix: {login}"
    if isinstance(error, exceptions.Forbidden) and _reasons(error) & {"accessNotConfigured", "SERVICE_DISABLED"}:
        return f"gcp.project: the Compute Engine API is not enabled in project {project} ({detail}); fix: gcloud services enable compute.googleapis.com --project {project}"
    if isinstance(error, exceptions.NotFound) and f"projects/{project}'" in detail:
        return f"gcp.project: project {project} does not exist or these credentials cannot see it; fix: set gcp.project to a project ID from `gcloud projects list`"
    if isinstance(error, requests.ConnectionError):
        return f"gcp.api_endpoint: no connection to the Compute API ({detail}); fix: check the network path to it (proxy, firewall, DNS) or gcp.api_endpoint"
    return None


def policy_problem(error: BaseException, project: str) -> str | None:
    """One line with the fix when an organization policy refused the call; None otherwise. The
    Compute API shows a policy only here, when it refuses something: compute.requireOsLogin
    refuses instance metadata that sets enable-oslogin=FALSE ("Update requests to set
    enable-oslogin to false in instance or project metadata are rejected",
    cloud.google.com/compute/docs/oslogin/manage-oslogin-in-an-org), which every node of
    khwtui carries: it logs in with its own key from instance metadata."""
    found = POLICY.search(describe(error))
    if found is None:
        return None
    constraint = found[1]
    exempt = f"fix: have an organization policy administrator exempt project {project} from constraints/{constraint}"
    elsewhere = "or set gcp.project to a project the policy does not cover"
    if constraint == "compute.requireOsLogin":
        return (
            f"gcp.project: organization policy constraints/compute.requireOsLogin enforces OS Login in project {project}, and "
            "khwtui's nodes need enable-oslogin=FALSE (khwtui logs in with its own key from instance metadata); "
            f"{exempt} (gcloud resource-manager org-policies disable-enforce compute.requireOsLogin --project {project}), {elsewhere}"
        )
    return f"gcp.project: organization policy constraints/{constraint} refused a request in project {project} ({describe(error)}); {exempt}, {elsewhere}"


def _reasons(error: exceptions.GoogleAPICallError) -> set[str]:
    """The `errors[].reason` values and the ErrorInfo reason of an API error."""
    listed = {e.get("reason", "") for e in error.errors or [] if isinstance(e, dict)}
    return listed | ({error.reason} if error.reason else set())


def failure(what: str, error: BaseException, region: str, project: str = "") -> GceError:
    """The error to raise for `what` failing; a quota error names the quota and the fix, and one
    that no stage can fix (access_problem) stops the run with exit 2."""
    if project and (access := access_problem(error, project) or policy_problem(error, project)):
        return AccessRefused(access)
    detail = describe(error)
    message = f"{what} failed: {detail}"
    if quota := QUOTA.search(detail):
        message += f"; fix: raise the {quota[1]} quota of region {region} (console: IAM & Admin > Quotas) or use fewer or smaller nodes"
    if isinstance(error, OperationFailed):
        return OperationFailed(message, error.status, error.codes)
    return GceError(message)


def last(url: str) -> str:
    """The last path segment of a resource URL (its name)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class HttpHealthCheck:
    """A legacy global HTTP health check (google-cloud-compute has no message for it): the
    fields khwtui sets and judges, read from and sent as the REST JSON."""

    name: str
    description: str = ""
    host: str = ""
    request_path: str = "/"
    port: int = 80

    @classmethod
    def from_json(cls, body: dict) -> HttpHealthCheck:
        return cls(body["name"], body.get("description", ""), body.get("host", ""), body.get("requestPath", "/"), int(body.get("port", 80)))

    def to_json(self) -> dict:
        body = {"name": self.name, "host": self.host, "requestPath": self.request_path, "port": self.port}
        return {**body, **({"description": self.description} if self.description else {})}


class LegacyHttpHealthChecks:
    """Global httpHealthChecks, which google-cloud-compute lacks (KTHW's target pool needs one):
    the get/list/insert/delete surface of a generated client, over AuthorizedSession."""

    def __init__(self, session: AuthorizedSession, base: str) -> None:
        self._session = session
        self._base = base

    def _url(self, request: dict, name: str = "") -> str:
        return f"{self._base}/compute/v1/projects/{request['project']}/global/httpHealthChecks" + (f"/{name}" if name else "")

    def get(self, request: dict, retry: object = None, timeout: float = CALL_TIMEOUT) -> HttpHealthCheck:
        return HttpHealthCheck.from_json(self._send("GET", self._url(request, request["http_health_check"]), timeout).json())

    def list(self, request: dict, retry: object = None, timeout: float = CALL_TIMEOUT) -> list[HttpHealthCheck]:
        found: list[HttpHealthCheck] = []
        token = ""
        while True:
            page = self._send("GET", self._url(request), timeout, {"pageToken": token} if token else None).json()
            found += [HttpHealthCheck.from_json(i) for i in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return found

    def insert_unary(self, request: dict, retry: object = None, timeout: float = CALL_TIMEOUT) -> compute_v1.Operation:
        body = request["http_health_check_resource"].to_json()
        reply = self._send("POST", self._url(request), timeout, {"requestId": request["request_id"]}, body)
        return compute_v1.Operation.from_json(reply.text, ignore_unknown_fields=True)

    def delete_unary(self, request: dict, retry: object = None, timeout: float = CALL_TIMEOUT) -> compute_v1.Operation:
        reply = self._send("DELETE", self._url(request, request["http_health_check"]), timeout, {"requestId": request["request_id"]})
        return compute_v1.Operation.from_json(reply.text, ignore_unknown_fields=True)

    def _send(self, method: str, url: str, timeout: float, params: dict | None = None, body: dict | None = None) -> Any:
        reply = self._session.request(method, url, params=params, json=body, timeout=timeout)
        if reply.status_code >= 400:
            raise exceptions.from_http_response(reply)
        return reply


class GceApi:
    """The Compute API of one project, region and zone, called from asyncio."""

    def __init__(self, project: str, region: str, zone: str, endpoint: str, creds: Credentials) -> None:
        self.project, self.region, self.zone = project, region, zone
        self._options = ClientOptions(api_endpoint=endpoint) if endpoint else None
        self._creds = creds
        self._base = endpoint.rstrip("/") if endpoint else DEFAULT_BASE
        self._clients: dict[str, Any] = {}
        self._pool = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="gce-api")
        # a ThreadPoolExecutor starts a thread only when no idle one is left: sized by the waits in flight
        self._waits = ThreadPoolExecutor(max_workers=WAIT_THREADS, thread_name_prefix="gce-wait")

    # --- resources --------------------------------------------------------------------------

    async def get(self, collection: str, name: str) -> Any | None:
        """The resource, or None when it does not exist."""
        kind = KINDS[collection]
        try:
            return await self.call(self._client(kind).get, request={**self._where(kind), kind.arg: name})
        except exceptions.NotFound:
            return None
        except CALL_ERRORS as error:
            raise failure(f"reading {kind.noun} {name}", error, self.region, self.project) from None

    async def list(self, collection: str, filter: str = "") -> list[Any]:
        """Every resource of the collection in this project/region/zone (all pages)."""
        kind = KINDS[collection]
        request = {**self._where(kind), **({"filter": filter} if filter else {})}
        try:
            return await self.call(_all_pages, self._client(kind).list, request=request)
        except CALL_ERRORS as error:
            raise failure(f"listing {kind.collection}", error, self.region, self.project) from None

    async def insert(self, collection: str, resource: Any) -> None:
        """Insert and wait until DONE. A 409 (the name is taken) is raised as Conflict; so is a
        resource found on re-reading after a transient operation error (the caller judges it)."""
        kind = KINDS[collection]

        async def attempt(again: bool) -> None:
            if again and await self.get(collection, resource.name) is not None:
                raise exceptions.Conflict(f"{kind.noun} {resource.name} exists after a retried insert")
            await self._operate(kind, "insert", {f"{kind.arg}_resource": resource})

        try:
            await self._retrying(attempt)
        except exceptions.Conflict:
            raise
        except (*CALL_ERRORS, OperationFailed) as error:
            raise failure(f"creating {kind.noun} {resource.name}", error, self.region, self.project) from None

    async def delete(self, collection: str, name: str) -> bool:
        """Delete and wait until DONE; False when it was already gone."""
        kind = KINDS[collection]

        async def attempt(again: bool) -> None:
            if again and await self.get(collection, name) is None:
                raise exceptions.NotFound(f"{kind.noun} {name} is gone")
            await self._operate(kind, "delete", {kind.arg: name})

        try:
            await self._retrying(attempt)
        except exceptions.NotFound:
            return False
        except (*CALL_ERRORS, OperationFailed) as error:
            if isinstance(error, OperationFailed) and error.status == 404:
                return False
            raise failure(f"deleting {kind.noun} {name}", error, self.region, self.project) from None
        return True

    async def act(self, collection: str, name: str, method: str, body: dict[str, Any]) -> None:
        """A custom method on one resource (e.g. add_instance with its `*_request_resource`), waited on."""
        kind = KINDS[collection]
        await self._act(kind, method, {kind.arg: name, **body}, f"{method.replace('_', ' ')} on {kind.noun} {name}")

    async def set_labels(self, collection: str, name: str, labels: dict[str, str], label_fingerprint: str) -> None:
        """setLabels on a regional resource (an address, a forwarding rule): the only way their
        labels are set; `label_fingerprint` is the one last read (a stale one gets 412)."""
        kind = KINDS[collection]
        body = compute_v1.RegionSetLabelsRequest(labels=labels, label_fingerprint=label_fingerprint)
        await self._act(kind, "set_labels", {"resource": name, "region_set_labels_request_resource": body}, f"setting the labels of {kind.noun} {name}")

    async def _act(self, kind: Kind, method: str, fields: dict[str, Any], what: str) -> None:
        try:
            await self._retrying(lambda again: self._operate(kind, method, fields))
        except (*CALL_ERRORS, OperationFailed) as error:
            raise failure(what, error, self.region, self.project) from None

    async def _retrying(self, attempt: Callable[[bool], Awaitable[None]]) -> None:
        """Run `attempt(again)` until it ends without a transient operation error, waiting
        OPERATION_RETRY_DELAYS between attempts; each attempt sends a new requestId (a replayed
        one would only return the failed operation). The last error is raised as it is."""
        for tried, delay in enumerate((*OPERATION_RETRY_DELAYS, None)):
            try:
                await attempt(tried > 0)
                return
            except OperationFailed as error:
                if not error.transient or delay is None:
                    raise
            await asyncio.sleep(delay)

    async def _operate(self, kind: Kind, method: str, fields: dict[str, Any]) -> None:
        """Start a mutating call with one requestId for all its retries, and wait until DONE."""
        request = {**self._where(kind), **fields, "request_id": str(uuid.uuid4())}
        operation = await self.call(getattr(self._client(kind), f"{method}_unary"), request=request)
        if method == "insert":
            crashpoints.reached("gcp.insert-sent")
        await self.wait(operation)

    async def group_members(self, group: str) -> builtins.list[str]:  # `list` in this class is the method above
        """The names of the instances in an unmanaged instance group (listInstances: a read sent as a POST)."""
        request = compute_v1.ListInstancesInstanceGroupsRequest(
            project=self.project, zone=self.zone, instance_group=group,
            instance_groups_list_instances_request_resource=compute_v1.InstanceGroupsListInstancesRequest(instance_state="ALL"),
        )
        try:
            found = await self.call(_all_pages, self._client(KINDS["instanceGroups"]).list_instances, request=request)
        except CALL_ERRORS as error:
            raise failure(f"listing the instances of instance group {group}", error, self.region, self.project) from None
        return [last(member.instance) for member in found]

    async def host_keys(self, instance: str) -> dict[str, str] | None:
        """The SSH host keys the guest agent published (type -> base64), None until it has."""
        request = compute_v1.GetGuestAttributesInstanceRequest(
            project=self.project, zone=self.zone, instance=instance, query_path="hostkeys/"
        )
        try:
            found = await self.call(self._client(KINDS["instances"]).get_guest_attributes, request=request)
        except exceptions.NotFound:
            return None
        except CALL_ERRORS as error:
            raise failure(f"reading the host keys of instance {instance}", error, self.region, self.project) from None
        return {i.key: i.value for i in found.query_value.items if i.namespace == "hostkeys"}

    # --- what preflight reads (the library's errors raised as they are) ---------------------

    async def project_info(self) -> compute_v1.Project:
        return await self.call(self._client_of("ProjectsClient").get, project=self.project)

    async def region_info(self) -> compute_v1.Region:
        return await self.call(self._client_of("RegionsClient").get, project=self.project, region=self.region)

    async def machine_type(self, name: str) -> compute_v1.MachineType:
        client = self._client_of("MachineTypesClient")
        return await self.call(client.get, project=self.project, zone=self.zone, machine_type=name)

    async def image_family(self, project: str, family: str) -> compute_v1.Image:
        return await self.call(self._client_of("ImagesClient").get_from_family, project=project, family=family)

    # --- calls and operations ---------------------------------------------------------------

    async def call(self, fn: Callable[..., Any], *args: Any, timeout: float = CALL_TIMEOUT, pool: ThreadPoolExecutor | None = None, **kwargs: Any) -> Any:
        """Run one sync client call in the pool (or `pool`); 429/5xx retried (same request, same requestId)."""
        loop = asyncio.get_running_loop()
        attempt = partial(fn, *args, retry=None, timeout=timeout, **kwargs)
        return await TRANSIENT_RETRY(lambda: loop.run_in_executor(pool or self._pool, attempt))()

    async def wait(self, operation: compute_v1.Operation) -> None:
        """Wait with the operations client of the operation's scope; raise its errors."""
        if operation.zone:
            client, where = self._waiter("ZoneOperationsClient"), {"zone": last(operation.zone)}
        elif operation.region:
            client, where = self._waiter("RegionOperationsClient"), {"region": last(operation.region)}
        else:
            client, where = self._waiter("GlobalOperationsClient"), {}
        deadline = asyncio.get_running_loop().time() + OPERATION_DEADLINE
        while operation.status != compute_v1.Operation.Status.DONE:
            if asyncio.get_running_loop().time() > deadline:
                raise GceError(f"operation {operation.name} still runs after {OPERATION_DEADLINE:.0f} s; fix: run again, khwtui adopts what it finished")
            request = {"project": self.project, **where, "operation": operation.name}
            operation = await self.call(client.wait, request=request, timeout=WAIT_CALL_TIMEOUT, pool=self._waits)
        if operation.error.errors:
            messages = "; ".join(e.message or e.code for e in operation.error.errors)
            raise OperationFailed(messages, operation.http_error_status_code or 400, tuple(e.code for e in operation.error.errors))

    def _where(self, kind: Kind) -> dict[str, str]:
        scope = {"global": {}, "region": {"region": self.region}, "zone": {"zone": self.zone}}[kind.scope]
        return {"project": self.project, **scope}

    def _client(self, kind: Kind) -> Any:
        if not kind.client:
            return self._clients.setdefault(kind.collection, LegacyHttpHealthChecks(AuthorizedSession(self._creds), self._base))
        return self._client_of(kind.client)

    def _waiter(self, name: str) -> Any:
        """An operations client whose session pools a connection per wait thread (requests keeps
        10 per host by default, and drops the rest with a warning)."""
        if name not in self._clients:
            adapter = HTTPAdapter(pool_maxsize=WAIT_THREADS)
            session = self._client_of(name)._transport._session  # the REST transport's requests session
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        return self._clients[name]

    def _client_of(self, name: str) -> Any:
        if name not in self._clients:
            self._clients[name] = getattr(compute_v1, name)(credentials=self._creds, client_options=self._options)
        return self._clients[name]


def _all_pages(list_method: Callable[..., Any], **kwargs: Any) -> list[Any]:
    return list(list_method(**kwargs))
