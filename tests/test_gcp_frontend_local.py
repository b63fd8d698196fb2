"""The gcp front end and routes end to end (issue 9): the real CLI against the fake Compute API,
whose instances are real nspawn nodes (tests/gcp_backing.py: the test apt repository as their
only source, python3 for the kube-* stand-ins as the image's packages) and whose forwarding
rules carry traffic to the members their health checks find healthy (tests/gcp_dataplane.py).

`up --auto --until frontend` then `--only routes`, for each load-balancer design; the
backend-service cluster runs with 10% of calls answered 429/503 and lost replies, for up and
down. Then teardown: `down` without a terminal refuses, and `down --yes` with the state folder
deleted finds the cluster's resources by label and name, leaving a second cluster alone.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import janitor
import pytest
from fakegce import FakeCompute
from gcp_dataplane import OPERATOR, LoadBalancers, run_in_netns
from google.auth.credentials import AnonymousCredentials
from localcluster import LocalCluster
from test_gcp_frontend import PRICES, frontend_bodies, route_bodies
from test_gcp_local import PROJECT, REGION, ZONE, cluster_config, gcp_cluster, go_offline
from test_gcp_provider import everything, insert_requests, mutating
from workerbed import STANDIN_PACKAGES

from khwtui.artifacts.sshkey import client_key
from khwtui.model import config as config_mod
from khwtui.model.config import Config
from khwtui.model.topology import Topology
from khwtui.providers.gcp import GcpProvider
from khwtui.providers.gcp_api import KINDS, GceApi

pytestmark = pytest.mark.integration

LB_STAGES = {"compute", "pki", "kubeconfigs", "encryption", "etcd", "control-plane", "rbac", "frontend"}
# rbac: the stand-in apiserver does not serve the RBAC API, so its objects cannot be read back
UNVERIFIED = {"rbac"}


@dataclass
class Built:
    fake: FakeCompute
    cluster: LocalCluster
    lbs: LoadBalancers
    config: Config
    until_frontend: int  # the exit code of `up --auto --until frontend`

    @property
    def topo(self) -> Topology:
        return Topology(self.config)

    @property
    def address(self) -> str:
        return next(a["address"] for a in self.fake.resources("addresses") if a["name"] == self.topo.names.address)

    def statuses(self) -> dict[str, str]:
        return {name: stage["status"] for name, stage in self.cluster.state()["stages"].items() if stage["status"] != "pending"}


def build(
    tmp_path: Path, mirror: dict, apt: object, gcp: dict, controllers: int, workers: int, lost: tuple[str, ...] = (), **knobs: float
) -> Iterator[Built]:
    """A gcp cluster (`gcp`: its gcp settings) made by the CLI up to the front end, then its
    routes; the data plane listens in the nodes' namespaces too (their own traffic to it).
    `lost`: collections whose first insert is carried out but answered 503."""
    prefix = janitor.new_prefix()
    knobs_and_nodes = {"apt": apt, "packages": STANDIN_PACKAGES, "gcp": gcp, **knobs}
    with pytest.MonkeyPatch.context() as env:
        go_offline(env, tmp_path)
        with gcp_cluster(tmp_path, prefix, mirror, controllers, workers, **knobs_and_nodes) as (fake, cluster), LoadBalancers(fake, netns=fake.backing.namespaces) as lbs:
            for collection in lost:
                fake.lose_replies("POST", rf"/{collection}$")
            until = cluster.khwtui("up", "--auto", "--until", "frontend", timeout=900)
            assert until.returncode in (0, 3), until.stdout[-4000:] + until.stderr
            routes = cluster.khwtui("up", "--auto", "--only", "routes")
            assert routes.returncode == 0, routes.stdout[-3000:] + routes.stderr
            yield Built(fake, cluster, lbs, cluster_config(cluster), until.returncode)


@pytest.fixture(scope="module")
def target_pool(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict, apt_repo: object) -> Iterator[Built]:
    # admin_cidrs narrowed to the operator's address, as plan and the default config advise
    gcp = {"load_balancer": "target-pool", "admin_cidrs": [f"{OPERATOR}/32"]}
    yield from build(tmp_path_factory.mktemp("tp"), release_mirror, apt_repo, gcp, 2, 2)


@pytest.fixture(scope="module")
def backend_service_with_faults(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict, apt_repo: object) -> Iterator[Built]:
    # the rates' draws follow the order concurrent calls arrive in, so the front end's own insert
    # is also answered 503 once whatever that order: the run must find it made, not make a second
    knobs = {"fault_rate": 0.1, "lose_reply_rate": 0.1, "seed": 11}
    gcp = {"load_balancer": "backend-service"}
    yield from build(tmp_path_factory.mktemp("bs"), release_mirror, apt_repo, gcp, 2, 1, lost=("backendServices",), **knobs)


# --- what the checks read -----------------------------------------------------------------------


def sent_bodies(built: Built) -> tuple[dict[str, dict], dict[str, dict]]:
    """The front end's requests by path segment (its collection or verb) and the routes by name,
    each asserted sent once — every retry of it with its first requestId and the same body."""
    frontend: dict[str, dict] = {}
    routes: dict[str, dict] = {}
    for verb, names in (("addInstance", ("addInstance", "addInstances")), ("setLabels", ("setLabels",))):
        calls = [r for r in built.fake.requests if r.method == "POST" and r.path.rsplit("/", 1)[1] in names and "/addresses/" not in r.path]
        assert len({r.query["requestId"] for r in calls}) == 1 and all(r.body == calls[0].body for r in calls)
        frontend[calls[0].path.rsplit("/", 1)[1] if verb == "addInstance" else verb] = calls[0].body
    for (collection, name), requests in insert_requests(built.fake).items():
        assert len({r.query["requestId"] for r in requests}) == 1, name
        assert all(r.body == requests[0].body for r in requests), name
        if collection == "routes":
            routes[name] = requests[0].body
        elif collection not in ("networks", "subnetworks", "addresses", "instances") and name not in compute_rules(built.topo):
            frontend[collection] = requests[0].body
    return frontend, routes


def compute_rules(topo: Topology) -> tuple[str, ...]:
    return (topo.names.allow_internal, topo.names.allow_external, topo.names.allow_node_api)


def planned(built: Built) -> set[tuple[str, str]]:
    """Every resource `plan` lists for the stages run (all but the smoke test's NodePort rule)."""
    _, public_key = client_key(built.cluster.state_dir / "ssh")
    plan = GcpProvider(built.config, built.topo, built.cluster.state_dir, public_key).plan()
    return {(r.kind, r.name) for r in plan.resources if r.stage in ("", "frontend", "routes")}


def made(fake: FakeCompute) -> set[tuple[str, str]]:
    """What exists, as `plan` names it (boot disks aside: they come with their instances)."""
    return {(KINDS[c].noun, n) for c, n in everything(fake) if c != "disks"}


def version_through(address: str, port: int, ca: Path) -> str:
    """KTHW's `curl --cacert ca.pem https://ADDRESS:6443/version`, from this (the operator's) machine."""
    connection = http.client.HTTPSConnection(address, port, timeout=10, context=ssl.create_default_context(cafile=str(ca)))
    connection.request("GET", "/version")
    return json.loads(connection.getresponse().read())["gitVersion"]


def healthz(address: str, host: str | None) -> tuple[int, str]:
    connection = http.client.HTTPConnection(address, 80, timeout=10)
    connection.request("GET", "/healthz", headers={"Host": host} if host else {})
    answer = connection.getresponse()
    return answer.status, answer.read().decode()


def assert_exactly_the_planned_load_balancer(built: Built) -> None:
    frontend, routes = sent_bodies(built)
    assert frontend == frontend_bodies(built.config, built.address)
    assert routes == route_bodies(built.config) and len(routes) == len(built.topo.workers)
    assert made(built.fake) == planned(built)
    assert sorted(d["name"] for d in built.fake.resources("disks")) == sorted(n.name for n in built.topo.nodes)
    assert built.statuses() == {**dict.fromkeys(LB_STAGES - UNVERIFIED, "passed"), **dict.fromkeys(UNVERIFIED, "unverified"), "routes": "passed"}
    assert built.until_frontend == 3  # rbac unverified, nothing failed


def assert_traffic_reaches_every_controller(built: Built) -> None:
    """The forwarding rule carries /version to the apiservers, and its health check finds every
    controller healthy."""
    rule, controllers = built.topo.names.forwarding_rule, [c.name for c in built.topo.controllers]
    built.lbs.wait_healthy(rule, controllers, timeout=30)
    port = built.config.network.api_port
    assert version_through(built.address, port, built.cluster.state_dir / "pki" / "ca.pem") == f"v{built.config.cluster.kubernetes_version}"


# --- the target pool (KTHW's design) ------------------------------------------------------------


def test_target_pool_up_to_routes_makes_exactly_kthws_resources_and_carries_traffic(target_pool: Built) -> None:
    assert_exactly_the_planned_load_balancer(target_pool)
    assert_traffic_reaches_every_controller(target_pool)
    members = next(p for p in target_pool.fake.resources("targetPools"))["instances"]
    assert [m.rsplit("/", 1)[1] for m in members] == [c.name for c in target_pool.topo.controllers]


def test_the_healthz_proxy_answers_on_every_controller_as_the_legacy_health_check_asks(target_pool: Built) -> None:
    host = f"kubernetes.default.svc.{target_pool.config.network.cluster_domain}"
    for controller in target_pool.topo.controllers:
        assert healthz(controller.internal_ip, host) == (200, "ok")
        assert healthz(controller.internal_ip, None)[0] == 404  # only the name the check sends is proxied
    probes = target_pool.lbs.probes(target_pool.topo.names.forwarding_rule)
    by_member = {p.instance: p for p in probes if p.healthy}
    assert sorted(by_member) == [c.name for c in target_pool.topo.controllers]
    assert all(p.host == host and p.url.endswith(":80/healthz") for p in by_member.values())


def test_a_second_run_of_the_front_end_and_routes_changes_nothing(target_pool: Built) -> None:
    before = len(target_pool.fake.requests)
    again = target_pool.cluster.khwtui("up", "--auto", "--only", "frontend,routes")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert mutating(target_pool.fake, before) == []


def test_status_probes_the_front_end_and_shows_what_the_cluster_costs_now(target_pool: Built) -> None:
    status = target_pool.cluster.khwtui("status")
    assert status.returncode == 0, status.stdout + status.stderr  # every probe of the stages done passes
    lines = status.stdout.splitlines()
    for controller in target_pool.topo.controllers:
        assert any(line.startswith(f"✔ frontend:/healthz proxy for the health check {controller.name} ") for line in lines)
    assert any(line.startswith("✔ frontend:/version through the load balancer ") and f"https://{target_pool.address}:6443/version: v1.35.4" in line for line in lines)
    nodes = len(target_pool.topo.nodes)  # each: machine, external IPv4, 50 GB disk; the rule holds the static address
    wanted = nodes * (PRICES["machine"] + PRICES["ip"] + 50 * PRICES["disk_gb_hour"]) + PRICES["rule"]
    assert f"✔ cost  ${wanted:.3f}/h" in lines
    assert any(line.startswith("✔ routes:cloud routes ") for line in lines)


def as_kubelet(built: Built, worker: str) -> int:
    """From inside `worker`'s node (its network namespace), what the kubelet does through its
    kubeconfig: GET /api on the load balancer's address with the worker's client certificate;
    the HTTP status, or an OSError when the connection is dropped."""
    pki = built.cluster.state_dir / "pki"
    tls = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    tls.load_cert_chain(pki / f"{worker}.pem", pki / f"{worker}-key.pem")

    def ask() -> int:
        connection = http.client.HTTPSConnection(built.address, built.config.network.api_port, timeout=10, context=tls)
        try:
            connection.request("GET", "/api")
            return connection.getresponse().status
        finally:
            connection.close()

    return run_in_netns(built.fake.backing.namespaces()[worker], ask)


def test_with_admin_cidrs_narrowed_the_workers_reach_the_api_through_the_front_end_only_by_the_nodes_rule(target_pool: Built) -> None:
    built, names = target_pool, target_pool.topo.names
    rule, workers = names.forwarding_rule, [w.name for w in target_pool.topo.workers]
    assert built.config.gcp.admin_cidrs == (f"{OPERATOR}/32",)
    built.lbs.wait_healthy(rule, [c.name for c in built.topo.controllers], timeout=30)
    assert [as_kubelet(built, w) for w in workers] == [200] * len(workers)
    assert built.lbs.dropped == []

    asyncio.run(GceApi(PROJECT, REGION, ZONE, built.fake.endpoint, AnonymousCredentials()).delete("firewalls", names.allow_node_api))
    with pytest.raises(OSError):  # the data plane drops it: nothing else admits a worker's address
        as_kubelet(built, workers[0])
    nat = {vm["name"]: vm["networkInterfaces"][0]["accessConfigs"][0]["natIP"] for vm in built.fake.resources("instances")}
    assert {(d.rule, d.source) for d in built.lbs.dropped} == {(rule, nat[workers[0]])}

    again = built.cluster.khwtui("up", "--auto", "--only", "frontend")  # its check finds the rule missing and puts it back
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert as_kubelet(built, workers[0]) == 200


def test_down_without_a_terminal_or_yes_exits_2_and_deletes_nothing(target_pool: Built) -> None:
    before = len(target_pool.fake.requests)
    refused = target_pool.cluster.khwtui("down")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--yes" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert mutating(target_pool.fake, before) == []


def test_down_with_the_state_folder_deleted_removes_the_cluster_and_nothing_of_another(target_pool: Built) -> None:
    other = second_cluster(target_pool)
    ours = everything(target_pool.fake) - other
    assert len(ours) == len(planned(target_pool)) + len(target_pool.topo.nodes)  # + the boot disks
    shutil.rmtree(target_pool.cluster.state_dir)

    down = target_pool.cluster.khwtui("down", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert everything(target_pool.fake) == other
    assert f"deleted {len(ours) - len(target_pool.topo.nodes)} resources" in down.stdout  # boot disks go with their instances


def second_cluster(built: Built) -> set[tuple[str, str]]:
    """Another cluster in the same project (the other design, one controller and one worker, its
    own name prefix), made by the provider itself: compute, front end, routes. Returns its resources."""
    raw = {
        "cluster": {"name": f"{built.config.cluster.name}-b"},
        "provider": {"kind": "gcp"},
        "gcp": {"project": PROJECT, "region": REGION, "zone": ZONE, "api_endpoint": built.fake.endpoint, "load_balancer": "backend-service"},
        "topology": {"controllers": 1, "workers": 1, "name_prefix": "b"},
        "network": {"node_cidr": the_24_after(built.config.network.node_cidr)},
    }
    config = config_mod.from_dict(raw)
    _, public_key = client_key(built.cluster.root / "b-ssh")
    provider = GcpProvider(config, Topology(config), built.cluster.root / "b-state", public_key)
    before = everything(built.fake)

    async def make() -> None:
        await provider.ensure(lambda line: None)
        await provider.ensure_frontend(lambda line: None)
        await provider.ensure_routes(lambda line: None)

    asyncio.run(make())
    theirs = everything(built.fake) - before
    assert len(theirs) == 8 + 2 + 5 + 1  # compute (network, subnet, 3 rules, address, 2 instances), 2 disks, front end, route
    return theirs


def the_24_after(cidr: str) -> str:
    """The other half of the backing bridge's /23 (see gcp_cluster): on the bridge, not the cluster's."""
    return str(list(ipaddress.IPv4Network(cidr).supernet(1).subnets(new_prefix=24))[1])


# --- the backend service, under faults ----------------------------------------------------------


def test_backend_service_under_faults_makes_exactly_the_planned_resources_and_carries_traffic(backend_service_with_faults: Built) -> None:
    built = backend_service_with_faults
    statuses = [r.status for r in built.fake.requests]
    assert statuses.count(429) + statuses.count(503) > 0 and any(r.lost_reply for r in built.fake.requests)
    assert_exactly_the_planned_load_balancer(built)
    assert_traffic_reaches_every_controller(built)


def test_down_under_faults_removes_everything(backend_service_with_faults: Built) -> None:
    built = backend_service_with_faults
    before = len(built.fake.requests)
    down = built.cluster.khwtui("down", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert everything(built.fake) == set()
    assert any(r.status in (429, 503) for r in built.fake.requests[before:])
