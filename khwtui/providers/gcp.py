"""The `gcp` provider: KTHW's compute resources on Compute Engine, with the real client library.

Nothing is kept locally: every run reads what exists back from the API, so a lost state folder
changes nothing. Every create reads first: a resource of this cluster with the wanted spec is
adopted; one with another spec, or one another cluster owns, stops the run before anything is
created (ownership: gcp_resources). Host keys come from guest attributes and are pinned before
ensure() returns. Later stages ask for theirs the same way: ensure_frontend (the load balancer
of gcp.load_balancer), ensure_routes (pod CIDR routes) and ensure_firewall (NodePort rules).
Teardown finds the cluster's resources by label, description and name prefix (no state needed)
and deletes them in dependency order, never touching another cluster's. running_cost prices what
runs now, for `khwtui status`.

The seam for running this path on real local nodes is the fake's InstanceBacking (tests/fakegce):
the provider only sees instances, their addresses and their published host keys.
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from collections.abc import (
    Awaitable,
    Callable,
    Container,
    Coroutine,
    Iterable,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncssh
from google.api_core import exceptions
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import compute_v1

from khwtui.core.errors import KhwError, UserError, combined
from khwtui.core.waiting import poll
from khwtui.model.config import Config
from khwtui.model.topology import Topology
from khwtui.providers import gcloud_settings, gcp_api, gcp_resources
from khwtui.providers.base import (
    LeftInPlace,
    LogFn,
    NodeEndpoint,
    Plan,
    PlannedResource,
    PreflightError,
)
from khwtui.providers.gcp_api import (
    CALL_ERRORS,
    KINDS,
    GceApi,
    GceError,
    describe,
    last,
)
from khwtui.providers.gcp_resources import (
    LABEL,
    NODE_API_DETAIL,
    Frontend,
    Wanted,
    differences,
    owner_of,
)

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
HOSTKEY_DEADLINE = 420.0  # from the insert: boot (BOOT_DEADLINE at most), then the agent publishes within a minute
HOSTKEY_POLL = 1.0  # seconds between guest-attribute reads: one cheap GET per node
BOOT_DEADLINE = 300.0
API_ERRORS = (*CALL_ERRORS, GceError)
# deletion order: users before what they use
TEARDOWN_ORDER = (
    ("forwardingRules",),
    ("targetPools", "backendServices"),
    ("httpHealthChecks", "healthChecks"),
    ("instanceGroups",),
    ("instances",),
    ("disks",),
    ("addresses",),
    ("routes",),
    ("firewalls",),
    ("subnetworks",),
    ("networks",),
)
LABEL_ONLY = ("instances", "disks")  # named after nodes ("controller-0"): found by label alone


class ResourceConflict(UserError):
    """An existing resource cannot be adopted: one line per resource, naming what to change."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Doomed:
    """A resource teardown deletes."""

    collection: str
    name: str
    detail: str


class GcpProvider:
    kind = "gcp"

    def __init__(self, config: Config, topo: Topology, state_dir: Path, client_public_key: str) -> None:
        # state_dir is unused: GCE itself is the record of what exists.
        self.config = config
        self.topo = topo
        self.settings = gcloud_settings.resolve(config)
        self.desired = gcp_resources.desired(config, topo, self.settings, client_public_key)
        self._api: GceApi | None = None
        self._address: str | None = None

    # --- plan (offline) ---------------------------------------------------------------------

    def plan(self) -> Plan:
        """Every resource the stages would create or adopt — compute's, the front end, the pod
        routes, the NodePort rules — and the hourly cost; no API call."""
        planned = [PlannedResource(w.noun, w.name, w.detail) for w in self.desired.all()]
        planned.append(PlannedResource("firewall", self.topo.names.allow_node_api, NODE_API_DETAIL.format(port=self.config.network.api_port)))
        address = self.topo.api_address or "the static address"
        later = [("frontend", w) for w in gcp_resources.frontend(self.config, self.topo, self.settings, address).resources]
        later += [("routes", w) for w in gcp_resources.routes(self.config, self.topo)]
        planned += [PlannedResource(w.noun, w.name, w.detail, stage) for stage, w in later]
        planned += [PlannedResource("firewall", name, f"the {stage} Service's NodePort from gcp.admin_cidrs to the workers", stage)
                    for stage, name in self._node_port_rules()]
        s = self.settings
        where = f"project {s.project or '(unset)'}, region {s.region}, zone {s.zone}"
        hourly, notes = estimate(self.config, len(self.desired.instances), s.region)
        return Plan(tuple(planned), hourly, (where, *notes))

    def check_names(self) -> str:
        """For `plan`: ResourceConflict (exit 2) when a resource that is not this cluster's holds
        a name it plans; else a note saying whether the project was read. It is read only with
        credentials found without the network (the fake's loopback endpoint, a key file, gcloud's
        application-default file): `plan` needs none and never waits on a metadata server."""
        unread = "planned names not checked against the project ({}); `up` checks them before it creates anything"
        if not self._offline_credentials():
            return unread.format("no Application Default Credentials file")
        try:
            api = self._connect()
            foreign = _blocking(lambda: self._foreign_holders(api))
        except (PreflightError, *API_ERRORS) as error:
            return unread.format(describe(error))
        if foreign:
            raise ResourceConflict(foreign)
        return f"project {api.project} holds none of these names but this cluster's"

    def _offline_credentials(self) -> bool:
        """Whether credentials can be had without asking the network (google.auth.default's
        last resort is the GCE metadata server)."""
        endpoint = self.config.gcp.api_endpoint
        if (endpoint and gcp_api.is_loopback(endpoint)) or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            return True
        return (gcloud_settings.gcloud_config_dir(os.environ) / "application_default_credentials.json").is_file()

    def _node_port_rules(self) -> list[tuple[str, str]]:
        """(stage, rule name) of the NodePort rules the smoke stage, and the demo if enabled, open."""
        rules = [("smoke", self.topo.names.allow_smoke)]
        return rules + ([("demo", self.topo.names.allow_demo)] if self.config.demo.enabled else [])

    # --- preflight ----------------------------------------------------------------------------

    async def preflight(self) -> None:
        """Credentials, project, API, image, machine type, quota and the names every stage will
        use, before any create."""
        await self._preflight()

    async def _preflight(self) -> list[str]:
        """preflight(); returns its warnings (project-wide OS Login) for ensure() to log."""
        api = self._connect()
        project = await self._reach(api)
        found = await asyncio.gather(self._image_problems(api), self._capacity_problems(api, project))
        problems = [line for lines in found for line in lines]
        if problems:
            raise PreflightError(problems)
        await self._claimed_elsewhere(api)
        return _os_login(project, api.project)

    def _connect(self) -> GceApi:
        """The API client; PreflightError when there are no credentials or no project."""
        if self._api is not None:
            return self._api
        problems = []
        creds, adc_project = None, None
        try:
            creds, adc_project = gcp_api.credentials(self.config.gcp.api_endpoint)
        except DefaultCredentialsError as error:
            why = f" ({describe(error)})" if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") else ""
            problems.append(
                f"no Google credentials (Application Default Credentials){why}; fix: run "
                "`gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
            )
        project = self.settings.project or adc_project
        if not project:
            problems.append("gcp.project: no GCP project is set; fix: set gcp.project in the config, or CLOUDSDK_CORE_PROJECT")
        if problems or creds is None or not project:
            raise PreflightError(problems)
        s = self.settings
        self._api = GceApi(project, s.region, s.zone, self.config.gcp.api_endpoint, creds)
        return self._api

    async def _reach(self, api: GceApi) -> Any:
        try:
            return await api.project_info()
        except API_ERRORS as error:
            if access := gcp_api.access_problem(error, api.project):
                raise PreflightError([access]) from None
            fix = f"check gcp.project, enable the API (gcloud services enable compute.googleapis.com --project {api.project}) and the network path"
            raise PreflightError([f"gcp.project: the Compute API of project {api.project} did not answer ({describe(error)}); fix: {fix}"]) from None

    async def _image_problems(self, api: GceApi) -> list[str]:
        g = self.config.gcp
        _, problems = await _read_or_problem(
            api.image_family(g.image_project, g.image_family),
            "gcp.image_family",
            f"project {g.image_project} has no image family {g.image_family}",
            f"pick a family from `gcloud compute images list --project {g.image_project}`, e.g. debian-12",
        )
        return problems

    async def _capacity_problems(self, api: GceApi, project: Any) -> list[str]:
        """The machine type exists in the zone, the zone is in the region, and quota suffices."""
        g, s = self.config.gcp, self.settings
        machine, problems = await _read_or_problem(
            api.machine_type(g.machine_type),
            "gcp.machine_type",
            f"{g.machine_type} does not exist in zone {s.zone}",
            f"pick one from `gcloud compute machine-types list --zones {s.zone}`, e.g. e2-standard-2",
        )
        region, more = await _read_or_problem(api.region_info(), "gcp.region", f"there is no region {s.region}", "use a region such as us-west1")
        problems += more
        if region is not None and s.zone not in {last(z) for z in region.zones}:
            problems.append(f"gcp.zone: zone {s.zone} is not in region {s.region}; fix: use a zone of {s.region}, e.g. {s.region}-c")
        if machine is not None and region is not None:
            problems += await self._quota_problems(api, machine.guest_cpus, region, project)
        return problems

    async def _quota_problems(self, api: GceApi, cpus: int, region: Any, project: Any) -> list[str]:
        """Headroom for what ensure() and the front end still have to create (what exists is
        already counted): the region's quotas, and CPUS_ALL_REGIONS, the project's."""
        try:
            existing = {i.name for i in await api.list("instances", self._label_filter())}
            address = await api.get("addresses", self.topo.names.address)
            rule = await api.get("forwardingRules", self.topo.names.forwarding_rule)
        except API_ERRORS as error:
            return [f"quota: could not read what exists ({describe(error)}); fix: check the credentials' Compute permissions"]
        missing = sum(1 for n in self.topo.nodes if n.name not in existing)
        needed = quota_needs(cpus, missing, self.config.gcp.disk_gb, address is None, rule is None)
        where = {"CPUS_ALL_REGIONS": (project.quotas, f"project {api.project} (all regions)")}
        problems = []
        for metric, amount in needed.items():
            quotas, scope = where.get(metric, (region.quotas, f"region {self.settings.region}"))
            quota = next((q for q in quotas if q.metric == metric), None)
            if quota is not None and amount and quota.usage + amount > quota.limit:
                problems.append(
                    f"quota {metric} of {scope}: {amount:g} more needed, {max(quota.limit - quota.usage, 0):g} of {quota.limit:g} free; "
                    f"fix: request more {metric} quota (console: IAM & Admin > Quotas) or use fewer or smaller nodes"
                )
        return problems

    async def _claimed_elsewhere(self, api: GceApi) -> None:
        """ResourceConflict for every name any stage will use that a resource without this
        cluster's marker holds: all found now, before anything is made."""
        if refusals := await self._foreign_holders(api):
            raise ResourceConflict(refusals)

    async def _foreign_holders(self, api: GceApi) -> list[str]:
        """One line per planned name held by a resource that is not this cluster's."""
        names = self._planned_names()
        found = await gather_all(api.get(collection, name) for collection, name, _ in names)
        return [
            self._foreign(KINDS[collection].noun, name, setting, owner_of(res))
            for (collection, name, setting), res in zip(names, found, strict=True)
            if res is not None and owner_of(res) != self.config.cluster.name
        ]

    def _planned_names(self) -> list[tuple[str, str, str]]:
        """(collection, name, the setting that renames it) of everything any stage makes."""
        front = gcp_resources.frontend(self.config, self.topo, self.settings, "0.0.0.0").resources
        wanted = [*self.desired.all(), *front, *gcp_resources.routes(self.config, self.topo)]
        rules = [self.topo.names.allow_node_api, *(name for _, name in self._node_port_rules())]
        return [(w.collection, w.name, w.setting) for w in wanted] + [("firewalls", name, "cluster.name") for name in rules]

    # --- ensure -------------------------------------------------------------------------------

    async def ensure(self, log: LogFn) -> list[NodeEndpoint]:
        """Create or adopt network, subnet, firewalls, address and instances; pin host keys; then
        open the API port to the nodes' external addresses (known only now)."""
        for warning in await self._preflight():
            log(f"warning: {warning}")
        api = self._connect()
        existing = await self._existing(api, self.desired.all())
        d = self.desired

        async def networked() -> list[NodeEndpoint]:
            """Firewalls beside the subnet and its instances: an instance needs its subnet only."""
            await self._make(api, d.network, existing, log)
            firewalls = gather_all(self._make(api, w, existing, log) for w in d.firewalls)
            return (await gather_two(firewalls, self._subnet_nodes(api, existing, log)))[1]

        endpoints = (await gather_two(self._make(api, d.address, existing, log), networked()))[1]
        await self._keep_node_api_rule(api, endpoints, log)
        await self._read_address(api)
        return endpoints

    async def _keep_node_api_rule(self, api: GceApi, endpoints: list[NodeEndpoint], log: LogFn) -> None:
        """The node API rule made or updated for the endpoints' external addresses."""
        await self._keep_rule(api, self._node_api_rule([ep.external_ip for ep in endpoints]), log)

    def _node_api_rule(self, external_ips: Iterable[str | None]) -> Wanted:
        return gcp_resources.node_api_rule(self.config, self.topo, [ip for ip in external_ips if ip])

    async def _node_api_wanted(self, api: GceApi) -> Wanted:
        """The node API rule for the nodes' external addresses as they are now."""
        instances = await api.list("instances", self._label_filter())
        return self._node_api_rule(nic.access_configs[0].nat_i_p for i in instances for nic in i.network_interfaces[:1] if nic.access_configs)

    async def _existing(self, api: GceApi, wanted: list[Wanted]) -> dict[tuple[str, str], Any]:
        """What exists of `wanted`, by (collection, name); ResourceConflict, before anything is
        made, when any of it cannot be adopted."""
        found = await gather_all(api.get(w.collection, w.name) for w in wanted)
        refusals = [line for w, res in zip(wanted, found, strict=True) if res is not None for line in self._refusals(w, res)]
        if refusals:
            raise ResourceConflict(refusals)
        return {(w.collection, w.name): res for w, res in zip(wanted, found, strict=True) if res is not None}

    def _refusals(self, wanted: Wanted, found: Any) -> list[str]:
        """Why an existing resource cannot be adopted: another owner, or another spec."""
        owner = owner_of(found)
        if owner != self.config.cluster.name:
            return [self._foreign(wanted.noun, wanted.name, wanted.setting, owner)]
        return [
            f"{wanted.noun} {wanted.name} exists with {diff.field} {diff.found}, wanted {diff.wanted}; "
            "fix: set the config back, or run `khwtui down` and `khwtui up` to rebuild it"
            for diff in differences(wanted, found)
        ]

    @staticmethod
    def _foreign(noun: str, name: str, setting: str, owner: str | None) -> str:
        """The line for a resource holding a name of ours that is not ours."""
        who = f"cluster {owner}" if owner else f"no khwtui cluster (it has no {LABEL} label or description)"
        return f"{setting}: {noun} {name} already exists and belongs to {who}; khwtui never adopts or deletes it; fix: choose another {setting}"

    async def _make(self, api: GceApi, wanted: Wanted, existing: Container[tuple[str, str]], log: LogFn) -> None:
        what = f"{wanted.noun} {wanted.name}"
        if (wanted.collection, wanted.name) in existing:
            log(f"{what}: exists, adopted")
        else:
            try:
                await api.insert(wanted.collection, wanted.resource)
                log(f"{what}: created ({wanted.detail})")
            except exceptions.Conflict:  # made since we read: an interrupted run's insert still finishing
                found = await _wait_for(lambda: api.get(wanted.collection, wanted.name), f"{what} to appear")
                if refusals := self._refusals(wanted, found):
                    raise ResourceConflict(refusals) from None
                log(f"{what}: appeared meanwhile, adopted")
        if wanted.labels:
            await self._label(api, wanted, log)

    async def _label(self, api: GceApi, wanted: Wanted, log: LogFn) -> None:
        """setLabels with the fingerprint just read, unless the labels are there: the API keeps
        no labels sent on the insert of an address or a forwarding rule."""
        found = await api.get(wanted.collection, wanted.name)
        if found is None:
            raise GceError(f"{wanted.noun} {wanted.name} vanished after it was made; fix: run again")
        if all(found.labels.get(k) == v for k, v in wanted.labels.items()):
            return
        await api.set_labels(wanted.collection, wanted.name, {**found.labels, **wanted.labels}, found.label_fingerprint)
        log(f"{wanted.noun} {wanted.name}: labelled {', '.join(f'{k}={v}' for k, v in wanted.labels.items())}")

    async def _subnet_nodes(self, api: GceApi, existing: Container[tuple[str, str]], log: LogFn) -> list[NodeEndpoint]:
        await self._make(api, self.desired.subnet, existing, log)
        return await gather_all(self._node(api, w, existing, log) for w in self.desired.instances)

    async def _node(self, api: GceApi, wanted: Wanted, existing: Container[tuple[str, str]], log: LogFn) -> NodeEndpoint:
        """Insert (or adopt) one instance, its host keys polled from the insert onwards: the guest
        agent may publish them before the insert's operation is seen DONE."""
        keys = asyncio.ensure_future(self._published_host_key(api, wanted.name))
        try:
            await self._make(api, wanted, existing, log)
            instance = await _wait_for(lambda: self._running(api, wanted.name), f"instance {wanted.name} to run", BOOT_DEADLINE)
        except BaseException:
            keys.cancel()
            await asyncio.gather(keys, return_exceptions=True)  # its own outcome: not the run's
            raise
        key = await keys
        log(f"{wanted.name}: host key {asyncssh.import_public_key(key).get_fingerprint()} pinned from guest attributes")
        return self._endpoint(wanted.name, instance, key)

    async def _running(self, api: GceApi, name: str) -> Any | None:
        """The instance once RUNNING; None while it boots; an error for any other status."""
        instance = await api.get("instances", name)
        if instance is None or instance.status in ("PROVISIONING", "STAGING"):
            return None
        if instance.status != "RUNNING":
            zone = self.settings.zone
            raise GceError(
                f"instance {name} is {instance.status}; fix: start it (gcloud compute instances start {name} --zone {zone}) or run `khwtui down`"
            )
        return instance

    async def _published_host_key(self, api: GceApi, name: str) -> str:
        """Poll guest attributes every HOSTKEY_POLL seconds until the agent publishes (a fixed
        short interval: a backoff would add up to its longest step to every node's wait); keep
        only ed25519."""
        try:
            keys = await poll(lambda: api.host_keys(name), timeout=HOSTKEY_DEADLINE, interval=HOSTKEY_POLL, what=f"host keys of {name}")
        except TimeoutError:
            raise GceError(
                f"instance {name} published no SSH host keys in guest attributes within {HOSTKEY_DEADLINE:.0f} s; "
                "khwtui never connects to an unpinned key; fix: use an image with the Google guest agent (e.g. debian-12)"
            ) from None
        key = ed25519_key(keys)
        if key is None:
            raise GceError(
                f"instance {name} published no valid ssh-ed25519 host key (found: {', '.join(sorted(keys)) or 'none'}); "
                "khwtui pins ed25519 keys only; fix: use an image whose sshd has an ed25519 host key"
            )
        return key

    def _endpoint(self, name: str, instance: Any, host_key: str) -> NodeEndpoint:
        nic = instance.network_interfaces[0]
        external = nic.access_configs[0].nat_i_p if nic.access_configs else None
        node = self.topo.node(name)
        return NodeEndpoint(name, node.role, nic.network_i_p, external, external or nic.network_i_p, self.config.ssh.port, host_key)

    # --- later stages: front end, routes, NodePort rules ----------------------------------------

    async def ensure_frontend(self, log: LogFn) -> None:
        """The load balancer of gcp.load_balancer on the static address and the API port, with
        the controllers as its members (read first, adopt only this cluster's equal resources),
        and the rule that lets the nodes reach it, put back if it went missing."""
        api = self._connect()
        front = await self._frontend(api)
        existing = await self._existing(api, list(front.resources))
        for wanted in front.resources:  # in order: each uses the one before
            await self._make(api, wanted, existing, log)
            if wanted is front.pool:
                await self._join(api, front, log)
        await self._keep_rule(api, await self._node_api_wanted(api), log)  # what the nodes reach it through

    async def frontend_problems(self) -> list[str]:
        """For the frontend check: each resource missing or unlike the plan (the node API rule
        included), and each controller missing from the pool or group; empty when all is there."""
        api = self._connect()
        try:
            front = await self._frontend(api)
        except GceError as error:
            return [str(error)]
        wanted = [*front.resources, await self._node_api_wanted(api)]
        found = await gather_all(api.get(w.collection, w.name) for w in wanted)
        problems = self._unlike(wanted, found)
        pool = found[front.resources.index(front.pool)]
        if pool is not None:
            try:
                absent = await _absent_members(api, front, pool)
            except ResourceConflict as error:
                return [*problems, str(error)]
            problems += [f"{front.pool.noun} {front.pool.name} lacks {name}" for name in absent]
        return problems

    async def _frontend(self, api: GceApi) -> Frontend:
        await self._read_address(api)
        if self._address is None:
            raise GceError(f"address {self.topo.names.address} of this cluster does not exist; fix: run the compute stage first (khwtui up --until compute)")
        return gcp_resources.frontend(self.config, self.topo, self.settings, self._address)

    async def _join(self, api: GceApi, front: Frontend, log: LogFn) -> None:
        """Add the controllers the target pool or instance group lacks (read back, not assumed)."""
        pool = front.pool
        found = await api.get(pool.collection, pool.name)
        if found is None:
            raise GceError(f"{pool.noun} {pool.name} vanished after it was made; fix: run again")
        absent = await _absent_members(api, front, found)
        if not absent:
            log(f"{pool.noun} {pool.name}: holds {', '.join(front.members)}")
            return
        refs = [compute_v1.InstanceReference(instance=f"zones/{self.settings.zone}/instances/{name}") for name in absent]
        if pool.collection == "targetPools":
            body = {"target_pools_add_instance_request_resource": compute_v1.TargetPoolsAddInstanceRequest(instances=refs)}
            await api.act(pool.collection, pool.name, "add_instance", body)
        else:
            body = {"instance_groups_add_instances_request_resource": compute_v1.InstanceGroupsAddInstancesRequest(instances=refs)}
            await api.act(pool.collection, pool.name, "add_instances", body)
        log(f"{pool.noun} {pool.name}: added {', '.join(absent)}")

    async def ensure_routes(self, log: LogFn) -> None:
        """One route per worker: its pod CIDR through its internal address (KTHW lab 11)."""
        api = self._connect()
        wanted = gcp_resources.routes(self.config, self.topo)
        existing = await self._existing(api, wanted)
        await gather_all(self._make(api, w, existing, log) for w in wanted)

    async def routes_problems(self) -> list[str]:
        """For the routes check: each worker's route missing or unlike the plan; empty when all are there."""
        api = self._connect()
        wanted = gcp_resources.routes(self.config, self.topo)
        return self._unlike(wanted, await gather_all(api.get(w.collection, w.name) for w in wanted))

    def _unlike(self, wanted: Sequence[Wanted], found: Sequence[Any]) -> list[str]:
        """One line per resource that is missing or differs from what was wanted."""
        return [
            line
            for w, res in zip(wanted, found, strict=True)
            for line in ([f"{w.noun} {w.name} does not exist"] if res is None else self._refusals(w, res))
        ]

    async def ensure_firewall(self, name: str, port: int) -> None:
        """tcp:<port> from gcp.admin_cidrs to the workers (a smoke or demo NodePort). This cluster's
        rule for an earlier NodePort is replaced; another's is refused."""
        wanted = gcp_resources.node_port_rule(self.config, self.topo, name, port)
        await self._keep_rule(self._connect(), wanted, _unlogged)

    async def _keep_rule(self, api: GceApi, wanted: Wanted, log: LogFn) -> None:
        """Make a firewall rule whose sources follow what exists (a NodePort, the nodes'
        addresses): this cluster's rule with other fields is replaced; another's is refused."""
        found = await api.get("firewalls", wanted.name)
        if found is not None and owner_of(found) != self.config.cluster.name:
            raise ResourceConflict(self._refusals(wanted, found))
        if found is not None and differences(wanted, found):
            await api.delete("firewalls", wanted.name)
            log(f"firewall {wanted.name}: removed, to follow {', '.join(d.field for d in differences(wanted, found))}")
            found = None
        await self._make(api, wanted, set() if found is None else {("firewalls", wanted.name)}, log)

    # --- running cost -------------------------------------------------------------------------

    def running_cost(self) -> float | None:
        """USD per hour of what this cluster has running now (read from the API, priced from the
        shipped table); None when something found is not in the table or the API cannot be read
        (`status` then shows no cost, and its probes say what is wrong)."""
        try:
            return _blocking(lambda: self._running_cost(self._connect()))
        except (PreflightError, *API_ERRORS):
            return None

    async def _running_cost(self, api: GceApi) -> float | None:
        instances, disks, rules = await gather_all(self._owned(api, c) for c in ("instances", "disks", "forwardingRules"))
        address = await api.get("addresses", self.topo.names.address)
        unused = address is not None and owner_of(address) == self.config.cluster.name and not address.users
        return running_hourly(price_table(), instances, disks, len(rules), unused)

    # --- power: stop and start (khwtui stop / start) ---------------------------------------------

    def stop_notes(self) -> list[str]:
        disk = self.config.gcp.disk_gb
        return [
            f"{len(self.topo.nodes)} instances stop: their VM time is not billed while they are stopped",
            f"still billed while stopped: the boot disks ({disk} GB each), the static API address and the forwarding rule",
            "their ephemeral external addresses are released; `khwtui start` reads the new ones back",
        ]

    async def stop(self, log: LogFn) -> None:
        """instances.stop on every instance of this cluster (found by its label) that is not stopped yet."""
        api = self._connect()
        found = {i.name: i for i in await api.list("instances", self._label_filter())}

        async def one(name: str) -> None:
            instance = found.get(name)
            if instance is None:
                log(f"{name}: no instance of this cluster by that name; nothing to stop")
            elif instance.status in STOPPED:
                log(f"{name}: already {instance.status}")
            else:
                await api.act("instances", name, "stop", {})
                log(f"{name}: stopped")

        await gather_all(one(n.name) for n in self.topo.nodes)

    async def start(self, log: LogFn) -> list[NodeEndpoint]:
        """instances.start where stopped; each endpoint is read back once RUNNING with its host key.
        The node API rule then follows the new external addresses (stopping released the old)."""
        api = self._connect()
        found = {i.name: i for i in await api.list("instances", self._label_filter())}
        missing = [n.name for n in self.topo.nodes if n.name not in found]
        if missing:
            raise GceError(f"{', '.join(missing)}: no instance of this cluster; fix: run `khwtui up` to create it")
        await self._read_address(api)

        async def one(name: str) -> NodeEndpoint:
            if found[name].status != "RUNNING":
                await api.act("instances", name, "start", {})
            instance = await _wait_for(lambda: self._running(api, name), f"instance {name} to run", BOOT_DEADLINE)
            endpoint = self._endpoint(name, instance, await self._published_host_key(api, name))
            log(f"{name}: running at {endpoint.ssh_host}")
            return endpoint

        endpoints = await gather_all(one(n.name) for n in self.topo.nodes)
        await self._keep_node_api_rule(api, endpoints, log)
        return endpoints

    # --- what exists --------------------------------------------------------------------------

    async def nodes(self) -> list[NodeEndpoint]:
        """The running instances of this cluster whose ed25519 host key is published."""
        api = self._connect()
        instances = {i.name: i for i in await api.list("instances", self._label_filter())}
        await self._read_address(api)

        async def endpoint(name: str) -> NodeEndpoint | None:
            instance = instances.get(name)
            if instance is None or instance.status != "RUNNING":
                return None
            key = ed25519_key(await api.host_keys(name) or {})
            return self._endpoint(name, instance, key) if key else None

        found = await gather_all(endpoint(n.name) for n in self.topo.nodes)
        return [ep for ep in found if ep is not None]

    def api_address(self) -> str | None:
        """The static address as ensure() or nodes() read it, else as saved in state."""
        return self._address or self.topo.api_address

    async def _read_address(self, api: GceApi) -> None:
        address = await api.get("addresses", self.topo.names.address)
        self._address = address.address if address is not None and owner_of(address) == self.config.cluster.name else None

    def _label_filter(self) -> str:
        return f"labels.{LABEL}={self.config.cluster.name}"

    # --- teardown -----------------------------------------------------------------------------

    def teardown_plan(self) -> list[PlannedResource]:
        """What teardown() deletes now, read from the API, in deletion order."""
        groups = _blocking(lambda: self._doomed(self._connect()))
        return [PlannedResource(KINDS[d.collection].noun, d.name, d.detail) for group in groups for d in group]

    async def teardown(self, log: LogFn) -> None:
        """Delete the cluster's resources group by group, waiting on each; gone already is fine.
        Then, if a resource without this cluster's marker holds one of its names, it was left
        where it is: LeftInPlace (exit 2) names it."""
        api = self._connect()
        for group in await self._doomed(api):
            await gather_all(self._delete(api, d, log) for d in group)
        if foreign := await self._foreign_holders(api):
            raise LeftInPlace(foreign)

    async def _delete(self, api: GceApi, doomed: Doomed, log: LogFn) -> None:
        deleted = await api.delete(doomed.collection, doomed.name)
        log(f"{KINDS[doomed.collection].noun} {doomed.name}: {'deleted' if deleted else 'already gone'}")

    async def _doomed(self, api: GceApi) -> list[list[Doomed]]:
        """The cluster's resources, grouped in TEARDOWN_ORDER."""
        collections = [c for group in TEARDOWN_ORDER for c in group]
        listed = dict(zip(collections, await gather_all(self._owned(api, c) for c in collections), strict=True))
        with_instances = {last(d.source) for i in listed["instances"] for d in i.disks if d.auto_delete}
        listed["disks"] = [disk for disk in listed["disks"] if disk.name not in with_instances]
        where = {"global": "global", "region": f"region {api.region}", "zone": f"zone {api.zone}"}
        return [
            [Doomed(c, r.name, where[KINDS[c].scope]) for c in group for r in listed[c]]
            for group in TEARDOWN_ORDER
        ]

    async def _owned(self, api: GceApi, collection: str) -> list[Any]:
        """This cluster's resources of a collection: those carrying its marker (label or
        description), whatever their names; an unmarked one is never ours."""
        if collection in LABEL_ONLY:
            return await api.list(collection, self._label_filter())
        return [r for r in await api.list(collection) if owner_of(r) == self.config.cluster.name]


def ed25519_key(keys: dict[str, str]) -> str | None:
    """"ssh-ed25519 <base64>" from published host keys, if there is a valid one."""
    blob = (keys.get("ssh-ed25519") or "").split()
    if not blob:
        return None
    try:
        key = asyncssh.import_public_key(f"ssh-ed25519 {blob[0]}")
    except (asyncssh.KeyImportError, ValueError):
        return None
    return f"ssh-ed25519 {blob[0]}" if key.algorithm == b"ssh-ed25519" else None


def estimate(config: Config, nodes: int, region: str) -> tuple[float | None, list[str]]:
    """Hourly cost of the whole cluster — the nodes, their external addresses and disks, and
    the forwarding rule (the static address it holds is free) — from the price table shipped
    in the package (its date and region in the notes)."""
    prices = price_table()
    hours, g, hourly_prices = prices["hours_per_month"], config.gcp, prices["hourly"]
    basis = f"list prices of {prices['region']} as of {prices['as_of']} ({prices['source']})"
    notes = [] if region == prices["region"] else [f"prices are {prices['region']}'s; {region} may differ"]
    machine = prices["machine_types"].get(g.machine_type)
    if machine is None:
        return None, [f"no estimate: the price table has no {g.machine_type} ({basis})", *notes]
    disk = prices["disk_gb_month"]["pd-standard"] * g.disk_gb / hours
    hourly = nodes * (machine + hourly_prices["external_ip_in_use"] + disk) + hourly_prices["forwarding_rule"]
    notes.insert(0, f"estimate ${hourly:.3f}/h, about ${hourly * hours:.0f}/month ({hours} h), {basis}")
    notes.append(f"until the frontend stage's forwarding rule holds it, the unused static address costs ${hourly_prices['static_ip_unused']}/h (the rule's ${hourly_prices['forwarding_rule']}/h is counted above)")
    return hourly, notes


def price_table() -> dict[str, Any]:
    """The price table shipped in the package (docs/UPSTREAM.md "Compute Engine prices")."""
    return tomllib.loads((resources.files("khwtui") / "data" / "gcp_prices.toml").read_text())


STOPPED = ("STOPPING", "STOPPED", "SUSPENDING", "SUSPENDED", "TERMINATED")


def running_hourly(prices: dict[str, Any], instances: list[Any], disks: list[Any], forwarding_rules: int, address_unused: bool) -> float | None:
    """Hourly cost of running instances (machine + external IPv4), every disk, the forwarding
    rules, and the static address while nothing uses it; None for a type the table lacks."""
    hourly, disk_month = prices["hourly"], prices["disk_gb_month"]
    total = forwarding_rules * hourly["forwarding_rule"] + (hourly["static_ip_unused"] if address_unused else 0.0)
    for instance in instances:
        if instance.status in STOPPED:
            continue
        machine = prices["machine_types"].get(last(instance.machine_type))
        if machine is None:
            return None
        external = any(nic.access_configs for nic in instance.network_interfaces)
        total += machine + (hourly["external_ip_in_use"] if external else 0.0)
    for disk in disks:
        per_gb = disk_month.get(last(disk.type_))
        if per_gb is None:
            return None
        total += per_gb * disk.size_gb / prices["hours_per_month"]
    return total


async def _absent_members(api: GceApi, front: Frontend, found: Any) -> list[str]:
    """The controllers a target pool (its `instances`) or instance group (listed) lacks. Any
    other instance in them would get API traffic: refused, naming it."""
    if front.pool.collection == "targetPools":
        present = [last(url) for url in found.instances]
    else:
        present = await api.group_members(front.pool.name)
    strangers = sorted(set(present) - set(front.members))
    if strangers:
        fix = "fix: remove them from it, or run `khwtui down` and `khwtui up` to rebuild it"
        raise ResourceConflict([f"{front.pool.noun} {front.pool.name} holds {', '.join(strangers)}, which are not this cluster's controllers; {fix}"])
    return [name for name in front.members if name not in present]


def _unlogged(line: str) -> None:
    """ensure_firewall's caller logs the rule itself."""


def _os_login(project: Any, name: str) -> list[str]:
    """A warning when the project turns OS Login on: the instances' own enable-oslogin=FALSE
    wins over project metadata, unless an organization policy (constraints/compute.requireOsLogin)
    enforces it. The Compute API shows that policy only by refusing the instance inserts;
    gcp_api.policy_problem() then stops the run (exit 2) naming it and the fix."""
    metadata = {item.key: item.value for item in project.common_instance_metadata.items}
    if metadata.get("enable-oslogin", "").upper() != "TRUE":
        return []
    return [(
        f"project {name} sets enable-oslogin=TRUE; khwtui's instances set enable-oslogin=FALSE, which wins unless an "
        "organization policy enforces OS Login (constraints/compute.requireOsLogin): then the instance inserts are refused and "
        "khwtui stops, naming the policy"
    )]


def quota_needs(cpus: int, nodes: int, disk_gb: int, address: bool, rule: bool) -> dict[str, float]:
    """What creating `nodes` instances (and the static address, and the forwarding rule that
    holds it, when they are still to be made) consumes, by quota metric. The boot disks are
    pd-standard (the API's default type), so they count against DISKS_TOTAL_GB; SSD_TOTAL_GB
    (pd-ssd, pd-balanced) is not consumed."""
    return {
        "CPUS": cpus * nodes,
        "CPUS_ALL_REGIONS": cpus * nodes,
        "INSTANCES": nodes,
        "DISKS_TOTAL_GB": disk_gb * nodes,
        "IN_USE_ADDRESSES": nodes + (1 if rule else 0),
        "STATIC_ADDRESSES": 1 if address else 0,
    }


async def _read_or_problem(read: Awaitable[T], key: str, missing: str, fix: str) -> tuple[T | None, list[str]]:
    """(what `read` returns, []) or (None, [one line naming `key`, the problem and the fix])."""
    try:
        return await read, []
    except exceptions.NotFound:
        return None, [f"{key}: {missing}; fix: {fix}"]
    except API_ERRORS as error:
        return None, [f"{key}: {describe(error)}; fix: {fix}"]


async def _wait_for(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = gcp_api.OPERATION_DEADLINE) -> T:
    try:
        return await poll(check, timeout=timeout, interval=1.0, what=what)
    except TimeoutError as error:
        raise GceError(f"{error}; fix: run again once GCE has finished") from None


async def gather_two(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """gather_all of two awaitables of different types, each result keeping its own."""
    a, b = await gather_all([first, second])
    return cast(A, a), cast(B, b)


async def gather_all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Run all to the end (none left running behind a failure), then raise what failed:
    one error as it is, several as one message with a line each (the same line once: an
    organization policy refuses every instance alike)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return [r for r in results if not isinstance(r, BaseException)]
    unexpected = [e for e in errors if not isinstance(e, KhwError)]
    if unexpected:
        raise unexpected[0]
    distinct = list({str(e): e for e in errors if isinstance(e, KhwError)}.values())
    if len(distinct) == 1:
        raise distinct[0]
    raise combined(distinct, GceError)


def _blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, in a thread of its own (this one may run a loop)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcp-sync") as runner:
        return runner.submit(asyncio.run, make()).result()
