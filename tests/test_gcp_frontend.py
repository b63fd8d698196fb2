"""The gcp provider's later-stage resources against the strict Compute fake, through the real
client: the API load balancer of either design, the pod routes, the NodePort firewall rules,
and the running cost. No nodes: the fake's generated machines stand behind the instances."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakegce import FakeCompute
from fakegce.rules import fingerprint
from google.cloud import compute_v1 as c
from test_gcp_provider import (  # noqa: F401 - `outside` is the autouse offline guard
    MARKER,
    PROJECT,
    READS_SENT_AS_POST,
    REGION,
    ZONE,
    everything,
    gcp_config,
    mutating,
    outside,
    provider,
    quiet,
    setup_api,
)

from khwtui.artifacts.frontend_files import healthz_files
from khwtui.artifacts.render import NodeFile
from khwtui.core.events import FAILED, PASSED, Event, HealthChanged
from khwtui.core.outcome import Outcome
from khwtui.engine.health import probe_once
from khwtui.model.cluster import Cluster
from khwtui.model.config import Config
from khwtui.model.state import NodeRecord, State, StateDir
from khwtui.model.topology import HEALTH_CHECK_SOURCES, Node, Topology
from khwtui.providers import gcp_api
from khwtui.providers.gcp import ResourceConflict, price_table, running_hourly
from khwtui.providers.gcp_api import HttpHealthCheck
from khwtui.stages.frontend import FrontendStage, apt_install, healthz_probe
from khwtui.toolkit.run_context import RunContext
from khwtui.transport.remote import RunResult

LABELS = {"khwtui-cluster": "kubernetes-the-hard-way"}
CONTROLLERS = ["controller-0", "controller-1", "controller-2"]
PRICES = {  # the shipped table's us-west1 list prices
    "machine": 0.06701142,
    "ip": 0.005,
    "unused_static": 0.01,
    "rule": 0.025,
    "disk_gb_hour": 0.04 / 730,
}


def sent_since(fake: FakeCompute, since: int) -> dict[str, list]:
    """The mutating requests after `since`, keyed by the last path segment (collection or verb)."""
    out: dict[str, list] = {}
    for r in fake.requests[since:]:
        if r.method == "POST" and not r.path.endswith(READS_SENT_AS_POST) and r.status == 200:
            out.setdefault(r.path.rsplit("/", 1)[1], []).append(r)
    return out


def address_of(fake: FakeCompute, name: str) -> str:
    return next(a["address"] for a in fake.resources("addresses") if a["name"] == name)


def served(fake: FakeCompute, collection: str, name: str) -> dict:
    return next(r for r in fake.resources(collection) if r["name"] == name)


async def built(fake: FakeCompute, config: Config) -> int:
    """Compute made; the index of the first request after it."""
    await provider(config).ensure(quiet)
    return len(fake.requests)


def frontend_end_state(fake: FakeCompute, config: Config) -> set[tuple[str, str]]:
    names = Topology(config).names
    if config.gcp.load_balancer == "target-pool":
        made = {("httpHealthChecks", names.http_health_check), ("targetPools", names.target_pool)}
    else:
        made = {("instanceGroups", names.instance_group), ("healthChecks", names.health_check), ("backendServices", names.backend_service)}
    return made | {("firewalls", names.allow_health_check), ("forwardingRules", names.forwarding_rule)}


def frontend_bodies(config: Config, address: str) -> dict[str, dict]:
    """KTHW lab 08's front end for gcp.load_balancer, as sent: each request's JSON body by the last
    segment of its path (the collection, or addInstance/addInstances for the members)."""
    names, port = Topology(config).names, config.network.api_port
    marker, labels = f"khwtui-cluster={config.cluster.name}", {"khwtui-cluster": config.cluster.name}
    members = {"instances": [{"instance": f"zones/{ZONE}/instances/{c.name}"} for c in Topology(config).controllers]}
    network = f"global/networks/{names.network}"
    if config.gcp.load_balancer == "target-pool":
        host = f"kubernetes.default.svc.{config.network.cluster_domain}"
        bodies = {
            "httpHealthChecks": {"name": names.http_health_check, "host": host, "requestPath": "/healthz", "port": 80, "description": marker},
            "targetPools": {"name": names.target_pool, "healthChecks": [f"global/httpHealthChecks/{names.http_health_check}"], "description": marker},
            "addInstance": members,
        }
        probed, target = 80, {"target": f"regions/{REGION}/targetPools/{names.target_pool}"}
    else:
        bodies = {
            "instanceGroups": {"name": names.instance_group, "network": network, "description": marker},
            "addInstances": members,
            "healthChecks": {"name": names.health_check, "type": "HTTPS", "httpsHealthCheck": {"port": port, "requestPath": "/readyz"}, "description": marker},
            "backendServices": {
                "name": names.backend_service, "loadBalancingScheme": "EXTERNAL", "protocol": "TCP", "description": marker,
                "healthChecks": [f"regions/{REGION}/healthChecks/{names.health_check}"],
                "backends": [{"group": f"zones/{ZONE}/instanceGroups/{names.instance_group}", "balancingMode": "CONNECTION"}],
            },
        }
        probed, target = port, {"backendService": f"regions/{REGION}/backendServices/{names.backend_service}"}
    bodies["firewalls"] = {
        "name": names.allow_health_check, "network": network, "direction": "INGRESS", "allowed": [{"IPProtocol": "tcp", "ports": [str(probed)]}],
        "sourceRanges": list(HEALTH_CHECK_SOURCES), "targetTags": ["controller"], "description": marker,
    }
    bodies["forwardingRules"] = {
        "name": names.forwarding_rule, "IPAddress": address, "IPProtocol": "TCP", "portRange": str(port),
        **target, "loadBalancingScheme": "EXTERNAL", "description": marker,
    }
    # the API keeps no labels sent on a forwarding rule's insert: setLabels, with the fingerprint of none
    bodies["setLabels"] = {"labels": labels, "labelFingerprint": fingerprint({})}
    return bodies


def route_bodies(config: Config) -> dict[str, dict]:
    """KTHW lab 11: one route per worker, by name: its pod CIDR through its internal address."""
    topo = Topology(config)
    return {
        topo.route_names()[w.name]: {
            "name": topo.route_names()[w.name], "network": f"global/networks/{topo.names.network}", "destRange": w.pod_cidr,
            "nextHopIp": w.internal_ip, "priority": 1000, "description": f"khwtui-cluster={config.cluster.name}",
        }
        for w in topo.workers
    }


# --- the load balancer ----------------------------------------------------------------------------


async def test_target_pool_is_kthw_lab_08_field_by_field() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake)
        names = Topology(config).names
        since = await built(fake, config)
        lines: list[str] = []
        await provider(config).ensure_frontend(lines.append)

        sent = sent_since(fake, since)
        assert sorted(sent) == ["addInstance", "firewalls", "forwardingRules", "httpHealthChecks", "setLabels", "targetPools"]
        assert all(len(reqs) == 1 and reqs[0].query.get("requestId") for reqs in sent.values())
        assert {k: reqs[0].body for k, reqs in sent.items()} == frontend_bodies(config, address_of(fake, names.address))
        assert sent["addInstance"][0].path.endswith(f"/regions/{REGION}/targetPools/{names.target_pool}/addInstance")
        members = served(fake, "targetPools", names.target_pool)["instances"]
        assert [m.rsplit("/", 1)[1] for m in members] == CONTROLLERS
        assert f"target pool {names.target_pool}: added {', '.join(CONTROLLERS)}" in lines


async def test_backend_service_is_a_regional_passthrough_over_the_controllers_group() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, gcp={"load_balancer": "backend-service"}, network={"api_port": 8443})
        names = Topology(config).names
        since = await built(fake, config)
        await provider(config).ensure_frontend(quiet)

        sent = sent_since(fake, since)
        assert sorted(sent) == ["addInstances", "backendServices", "firewalls", "forwardingRules", "healthChecks", "instanceGroups", "setLabels"]
        assert all(len(reqs) == 1 and reqs[0].query.get("requestId") for reqs in sent.values())
        assert {k: reqs[0].body for k, reqs in sent.items()} == frontend_bodies(config, address_of(fake, names.address))
        assert sent["instanceGroups"][0].path.endswith(f"/zones/{ZONE}/instanceGroups")
        assert sent["healthChecks"][0].path.endswith(f"/regions/{REGION}/healthChecks")
        assert served(fake, "instanceGroups", names.instance_group)["size"] == 3


async def test_the_frontend_needs_the_static_address_first() -> None:
    with FakeCompute(project=PROJECT) as fake:
        with pytest.raises(Exception, match=r"address kubernetes-the-hard-way-api of this cluster does not exist; fix: run the compute stage first"):
            await provider(gcp_config(fake)).ensure_frontend(quiet)
        assert mutating(fake) == []


async def test_a_frontend_resource_with_another_spec_is_refused_naming_the_field() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake)
        names = Topology(config).names
        since = await built(fake, config)
        await setup_api(fake).insert("targetPools", c.TargetPool(name=names.target_pool, description=MARKER))  # no health check
        count = len(fake.requests)
        with pytest.raises(ResourceConflict, match=f"target pool {names.target_pool} exists with healthChecks \\[\\], wanted \\[{names.http_health_check}\\]"):
            await provider(config).ensure_frontend(quiet)
        assert mutating(fake, count) == [] and since < count


async def test_an_instance_group_is_judged_by_its_listed_members() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, gcp={"load_balancer": "backend-service"}, topology={"controllers": 2, "workers": 1})
        names = Topology(config).names
        await built(fake, config)
        await setup_api(fake).insert("instanceGroups", c.InstanceGroup(name=names.instance_group, description=MARKER, network=f"global/networks/{names.network}"))
        join = c.InstanceGroupsAddInstancesRequest(instances=[c.InstanceReference(instance=f"zones/{ZONE}/instances/{n}") for n in ("controller-1", "worker-0")])
        await setup_api(fake).act("instanceGroups", names.instance_group, "add_instances", {"instance_groups_add_instances_request_resource": join})
        problems = await provider(config).frontend_problems()
        assert f"instance group {names.instance_group} holds worker-0, which are not this cluster's controllers; fix: remove them from it, or run `khwtui down` and `khwtui up` to rebuild it" in problems
        count = len(fake.requests)
        with pytest.raises(ResourceConflict, match="holds worker-0"):
            await provider(config).ensure_frontend(quiet)
        assert mutating(fake, count) == []  # the group comes first: nothing made around a wrong one


# --- routes and NodePort rules --------------------------------------------------------------------


async def test_one_route_per_worker_to_its_pod_cidr_through_its_internal_address() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, topology={"controllers": 1, "workers": 3})
        topo = Topology(config)
        since = await built(fake, config)
        await provider(config).ensure_routes(quiet)

        routes = {r.body["name"]: r.body for r in sent_since(fake, since)["routes"]}
        assert routes == route_bodies(config) and len(routes) == 3
        assert sorted((b["destRange"], b["nextHopIp"]) for b in routes.values()) == [(w.pod_cidr, w.internal_ip) for w in topo.workers]
        assert [w.pod_cidr for w in topo.workers] == ["10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24"]


async def test_a_node_port_rule_opens_the_port_to_the_admin_cidrs_on_the_workers_and_follows_the_port() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, gcp={"admin_cidrs": ["203.0.113.0/24"]}, topology={"controllers": 1, "workers": 1})
        names = Topology(config).names
        await built(fake, config)
        await provider(config).ensure_firewall(names.allow_smoke, 30080)
        rule = served(fake, "firewalls", names.allow_smoke)
        assert (rule["allowed"], rule["sourceRanges"], rule["targetTags"], rule["description"]) == (
            [{"IPProtocol": "tcp", "ports": ["30080"]}], ["203.0.113.0/24"], ["worker"], MARKER,
        )
        count = len(fake.requests)
        await provider(config).ensure_firewall(names.allow_smoke, 30080)
        assert mutating(fake, count) == []
        await provider(config).ensure_firewall(names.allow_smoke, 31000)  # the Service was made again
        assert served(fake, "firewalls", names.allow_smoke)["allowed"] == [{"IPProtocol": "tcp", "ports": ["31000"]}]
        assert [m for m, _ in mutating(fake, count)] == ["DELETE", "POST"]


async def test_a_node_port_rule_of_another_cluster_is_left_alone() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, topology={"controllers": 1, "workers": 1})
        names = Topology(config).names
        await built(fake, config)
        theirs = c.Firewall(name=names.allow_demo, network=f"global/networks/{names.network}", allowed=[c.Allowed(I_p_protocol="tcp", ports=["30001"])], description="khwtui-cluster=other")
        await setup_api(fake).insert("firewalls", theirs)
        count = len(fake.requests)
        with pytest.raises(ResourceConflict, match="belongs to cluster other"):
            await provider(config).ensure_firewall(names.allow_demo, 30002)
        assert mutating(fake, count) == []


# --- idempotence, faults, teardown ----------------------------------------------------------------


@pytest.mark.parametrize("design", ["target-pool", "backend-service"])
async def test_a_second_run_of_every_ensure_changes_nothing(design: str) -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, gcp={"load_balancer": design})
        names = Topology(config).names
        await built(fake, config)
        await provider(config).ensure_frontend(quiet)
        await provider(config).ensure_routes(quiet)
        await provider(config).ensure_firewall(names.allow_smoke, 30080)
        count = len(fake.requests)
        lines: list[str] = []
        again = provider(config)  # a fresh object: no memory of the runs above
        await again.ensure_frontend(lines.append)
        await again.ensure_routes(lines.append)
        await again.ensure_firewall(names.allow_smoke, 30080)
        assert mutating(fake, count) == []
        assert sum("exists, adopted" in line for line in lines) == len(frontend_end_state(fake, config)) + 2  # + the node API rule, the route
        assert any(line.endswith(f"holds {', '.join(CONTROLLERS)}") for line in lines)


@pytest.mark.parametrize("design", ["target-pool", "backend-service"])
async def test_faults_and_lost_replies_end_in_the_same_state(design: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the same retry policy on a short clock: the test pins the outcome, not the backoff
    monkeypatch.setattr(gcp_api, "TRANSIENT_RETRY", gcp_api.TRANSIENT_RETRY.with_delay(initial=0.01, maximum=0.1))
    with FakeCompute(project=PROJECT, fault_rate=0.1, lose_reply_rate=0.5, seed=7) as fake:
        config = gcp_config(fake, gcp={"load_balancer": design}, topology={"controllers": 3, "workers": 2})
        topo = Topology(config)
        await built(fake, config)
        await provider(config).ensure_frontend(quiet)
        await provider(config).ensure_routes(quiet)
        await provider(config).ensure_firewall(topo.names.allow_smoke, 30080)

        statuses = [r.status for r in fake.requests]
        assert statuses.count(429) + statuses.count(503) > 0
        calls: dict[tuple[str, str], list[str]] = {}
        for r in fake.requests:
            if r.method == "POST" and not r.path.endswith(READS_SENT_AS_POST):
                calls.setdefault((r.path, (r.body or {}).get("name", "")), []).append(r.query["requestId"])
        assert any(len(ids) > 1 for ids in calls.values())  # retried...
        assert all(len(set(ids)) == 1 for ids in calls.values())  # ...each with its first requestId
        compute = {(col, n) for col, n in everything(fake) if col in ("networks", "subnetworks", "addresses", "instances", "disks")}
        routes = {("routes", n) for n in topo.route_names().values()}
        rules = {("firewalls", n) for n in (topo.names.allow_internal, topo.names.allow_external, topo.names.allow_node_api, topo.names.allow_smoke)}
        assert everything(fake) == compute | frontend_end_state(fake, config) | routes | rules
        if design == "target-pool":
            members = served(fake, "targetPools", topo.names.target_pool)["instances"]
            assert [m.rsplit("/", 1)[1] for m in members] == CONTROLLERS
        else:
            assert served(fake, "instanceGroups", topo.names.instance_group)["size"] == 3


async def test_teardown_removes_the_frontend_routes_and_rules_and_nothing_of_another_cluster() -> None:
    with FakeCompute(project=PROJECT) as fake:
        alpha = gcp_config(fake, cluster={"name": "alpha"}, topology={"controllers": 2, "workers": 2})
        beta = gcp_config(fake, cluster={"name": "beta"}, gcp={"load_balancer": "backend-service"}, topology={"controllers": 1, "workers": 1, "name_prefix": "beta"})
        for config in (alpha, beta):
            names = Topology(config).names
            await built(fake, config)
            await provider(config).ensure_frontend(quiet)
            await provider(config).ensure_routes(quiet)
            await provider(config).ensure_firewall(names.allow_smoke, 30080)
            await provider(config).ensure_firewall(names.allow_demo, 30090)
        before = everything(fake)
        of_beta = {(col, n) for col, n in before if n.startswith("beta")}
        assert len(of_beta) == 18  # compute 8 and its 2 disks + frontend 5 + route 1 + NodePort rules 2

        await provider(alpha).teardown(quiet)
        assert everything(fake) == of_beta
        count = len(fake.requests)
        await provider(beta).teardown(quiet)
        assert everything(fake) == set()
        deleted = sorted(r.path.split("/")[-2] for r in fake.requests[count:] if r.method == "DELETE")
        assert deleted.count("routes") == 1 and deleted.count("forwardingRules") == 1 and deleted.count("instanceGroups") == 1


# --- running cost ---------------------------------------------------------------------------------


async def test_running_costprice_table_what_runs_now() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake)
        disks = 4 * 50 * PRICES["disk_gb_hour"]
        nodes = 4 * (PRICES["machine"] + PRICES["ip"])
        assert provider(config).running_cost() == 0
        await built(fake, config)
        assert provider(config).running_cost() == pytest.approx(nodes + disks + PRICES["unused_static"])
        await provider(config).ensure_frontend(quiet)
        assert provider(config).running_cost() == pytest.approx(nodes + disks + PRICES["rule"])  # the rule holds the address


def test_running_cost_is_unknown_for_a_machine_type_the_table_lacks() -> None:
    unpriced = c.Instance(machine_type=f"zones/{ZONE}/machineTypes/n2-standard-2", status="RUNNING")
    stopped = c.Instance(machine_type=f"zones/{ZONE}/machineTypes/e2-standard-2", status="TERMINATED")
    assert running_hourly(price_table(), [unpriced], [], 0, False) is None
    assert running_hourly(price_table(), [stopped], [], 1, False) == pytest.approx(PRICES["rule"])


# --- the frontend stage on gcp: the controllers' /healthz proxy, then the provider's resources ----


@dataclass
class NodesRun:
    """The parts of RunContext the frontend stage's gcp branch uses, recording what it runs per
    node; every command succeeds and the /healthz probe answers `healthz`."""

    topo: Topology
    provider: object
    healthz: str = "200"
    commands: dict[str, list[str]] = field(default_factory=dict)
    placed: dict[str, list[NodeFile]] = field(default_factory=dict)
    units: dict[str, list[str]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    state: State = field(default_factory=State)
    stage: str = "frontend"
    _restarted: set[tuple[str, str]] = field(default_factory=set)

    @property
    def config(self) -> Config:
        return self.topo.config

    async def sh(self, node: str, command: str, **_: object) -> RunResult:
        self.commands.setdefault(node, []).append(command)
        return RunResult(0, self.healthz if command == healthz_probe(self.topo) else "", "")

    async def place(self, node: str, files: list[NodeFile], restarts: dict[str, list[str]]) -> list[str]:
        self.state.nodes.setdefault(node, NodeRecord(node, "controller"))
        self.mark_due(node, [f.path for f in files], restarts)
        self.placed.setdefault(node, []).extend(files)
        return [f.path for f in files]

    def save(self) -> None:
        pass

    mark_due, restart_due, start_units = RunContext.mark_due, RunContext.restart_due, RunContext.start_units

    async def each(self, nodes: tuple[Node, ...], work: Callable[[Node], Awaitable[Outcome | None]]) -> list:
        return [await work(n) for n in nodes]

    def record_unit(self, node: str, unit: str) -> None:
        self.units.setdefault(node, []).append(unit)

    def log(self, node: str, line: str) -> None:
        self.lines.append(line)


def test_the_healthz_site_is_kthws_with_the_upstream_verified() -> None:
    topo = Topology(gcp_config(None, network={"cluster_domain": "example.internal", "api_port": 8443}))
    [site] = healthz_files(topo)
    assert site.path == "/etc/nginx/conf.d/kubernetes-healthz.conf"
    lines = [line.strip() for line in site.content.decode().splitlines() if line.strip() and not line.startswith("#")]
    assert lines == [
        "server {", "listen 80;", "server_name kubernetes.default.svc.example.internal;",
        "location = /healthz {", "proxy_pass https://127.0.0.1:8443/healthz;", "proxy_ssl_trusted_certificate /var/lib/kubernetes/ca.pem;",
        "proxy_ssl_verify on;", "proxy_ssl_name kubernetes.default.svc.example.internal;", "}", "}",
    ]
    assert "kubernetes.default.svc.example.internal" in topo.apiserver_sans()[0]  # the name nginx verifies


async def test_on_gcp_the_stage_puts_the_healthz_proxy_on_every_controller_then_makes_the_load_balancer(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake)
        await built(fake, config)
        run = NodesRun(Topology(config), provider(config))
        waited: list[bool] = []

        async def serving(stage: FrontendStage, r: NodesRun) -> None:  # /version through the address: no apiserver here
            waited.append(True)

        monkeypatch.setattr(FrontendStage, "_wait_serving", serving)
        await FrontendStage().apply(run)  # type: ignore[arg-type]

        assert sorted(run.commands) == CONTROLLERS and waited == [True]
        for node in CONTROLLERS:
            assert run.commands[node] == [
                apt_install("nginx"), "nginx -t -q", "systemctl enable nginx", "systemctl daemon-reload", "systemctl reload-or-restart nginx",
            ]
            assert run.state.nodes[node].restarts == {"nginx": "frontend"}  # until the engine's check passes
            assert run.placed[node] == healthz_files(run.topo) and run.units[node] == ["nginx"]
        assert {("forwardingRules", run.topo.names.forwarding_rule), ("targetPools", run.topo.names.target_pool)} <= everything(fake)

        stage = FrontendStage()
        cloud = await stage._cloud_outcome(run)  # type: ignore[arg-type]
        assert (cloud.check, cloud.result) == ("load balancer resources", PASSED)
        proxies = [await stage._healthz_outcome(run, n) for n in run.topo.controllers]  # type: ignore[arg-type]
        assert [(o.node, o.result) for o in proxies] == [(n, PASSED) for n in CONTROLLERS]
        run.healthz = "502"
        [down] = [await stage._healthz_outcome(run, run.topo.controllers[0])]  # type: ignore[arg-type]
        assert down.result == FAILED and down.evidence.splitlines() == [f"$ {healthz_probe(run.topo)}", "502"]


async def test_the_backend_service_needs_no_proxy_on_the_controllers(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, gcp={"load_balancer": "backend-service"})
        await built(fake, config)
        run = NodesRun(Topology(config), provider(config))

        async def serving(stage: FrontendStage, r: NodesRun) -> None:
            """No apiserver here to answer /version."""

        monkeypatch.setattr(FrontendStage, "_wait_serving", serving)
        await FrontendStage().apply(run)  # type: ignore[arg-type]
        assert run.commands == {} and ("backendServices", run.topo.names.backend_service) in everything(fake)


async def test_the_frontend_check_names_each_missing_resource() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake)
        names = Topology(config).names
        assert await provider(config).frontend_problems() == [
            f"address {names.address} of this cluster does not exist; fix: run the compute stage first (khwtui up --until compute)"
        ]
        await built(fake, config)
        assert await provider(config).frontend_problems() == [
            f"legacy health check {names.http_health_check} does not exist",
            f"target pool {names.target_pool} does not exist",
            f"firewall {names.allow_health_check} does not exist",
            f"forwarding rule {names.forwarding_rule} does not exist",
        ]
        await setup_api(fake).insert("httpHealthChecks", HttpHealthCheck(names.http_health_check, MARKER, "kubernetes.default.svc.cluster.local", "/healthz", 80))
        await setup_api(fake).insert("targetPools", c.TargetPool(name=names.target_pool, description=MARKER, health_checks=[f"global/httpHealthChecks/{names.http_health_check}"]))
        assert f"target pool {names.target_pool} lacks controller-0" in await provider(config).frontend_problems()
        await provider(config).ensure_frontend(quiet)
        assert await provider(config).frontend_problems() == []


async def test_status_shows_the_running_cost_of_a_gcp_cluster(tmp_path: Path) -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake)
        await built(fake, config)
        folder = StateDir(tmp_path / "state")
        events: list[Event] = []
        code = await probe_once(Cluster(config, folder, folder.load()), events.append)
        [cost] = [e for e in events if isinstance(e, HealthChanged)]
        wanted = 4 * (PRICES["machine"] + PRICES["ip"] + 50 * PRICES["disk_gb_hour"]) + PRICES["unused_static"]
        assert (cost.probe, cost.result, cost.detail, code) == ("cost", PASSED, f"${wanted:.3f}/h", 0)


def test_running_cost_is_unknown_when_the_api_cannot_be_read() -> None:
    with FakeCompute(project=PROJECT) as fake:
        fake.inject("GET", r"/instances$", 403)
        assert provider(gcp_config(fake)).running_cost() is None
    assert provider(gcp_config(None)).running_cost() is None  # no credentials: no cost, no traffic
