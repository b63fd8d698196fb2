"""The gcp provider against the strict Compute fake, through the real google-cloud-compute client.

Every test runs offline: no cloud config, no metadata-server probe, and any connection or name
lookup beyond 127.0.0.0/8 is refused and fails the test.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
import requests
import tomli_w
from fakegce import FakeCompute
from fakegce.backing import public_key_base64
from google.auth.compute_engine import _metadata
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1 as c

from khwtui.cli.command_line import main
from khwtui.core.errors import EXIT_FAILED, EXIT_USAGE
from khwtui.model import config as config_mod
from khwtui.model.config import Config
from khwtui.model.topology import Topology
from khwtui.providers.base import LeftInPlace, PreflightError
from khwtui.providers.gcp import GcpProvider, ResourceConflict
from khwtui.providers.gcp_api import KINDS, MAX_IN_FLIGHT, GceApi, GceError, HttpHealthCheck

PROJECT = "khwtui-test"  # config accepts only real project IDs (6-30 characters)
REGION, ZONE = "us-west1", "us-west1-c"
CLIENT_KEY = asyncssh.generate_private_key("ssh-ed25519", comment="khwtui@test").export_public_key().decode().strip()
LABELS = {"khwtui-cluster": "kubernetes-the-hard-way"}
MARKER = "khwtui-cluster=kubernetes-the-hard-way"
# KTHW's --scopes, by gcloud alias -> the scope URL gcloud sends
KTHW_SCOPES = [
    f"https://www.googleapis.com/auth/{scope}"
    for alias, scope in {
        "compute-rw": "compute",
        "storage-ro": "devstorage.read_only",
        "service-management": "service.management.readonly",
        "service-control": "servicecontrol",
        "logging-write": "logging.write",
        "monitoring": "monitoring",
    }.items()
]
GCP_ENV = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "CLOUDSDK_COMPUTE_REGION",
    "CLOUDSDK_COMPUTE_ZONE",
    "CLOUDSDK_ACTIVE_CONFIG_NAME",
)


def _loopback(host: object) -> bool:
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture(autouse=True)
def outside(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """Offline: every connection or lookup beyond 127.0.0.0/8 is refused and recorded."""
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # google-auth reads the variable at import
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    for name in GCP_ENV:
        monkeypatch.delenv(name, raising=False)
    attempts: list[str] = []
    real_connect, real_connect_ex, real_lookup = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guard(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):  # type: ignore[index]
            attempts.append(f"connect {address}")
            raise OSError("test: no traffic beyond 127.0.0.0/8")

    def connect(sock: socket.socket, address: object) -> None:
        guard(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: object) -> int:
        guard(sock, address)
        return real_connect_ex(sock, address)

    def lookup(host: object, *args: object, **kwargs: object) -> list:
        if host is not None and not _loopback(host):
            attempts.append(f"lookup {host}")
            raise socket.gaierror(socket.EAI_NONAME, "test: no lookups beyond 127.0.0.0/8")
        return real_lookup(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    yield attempts
    assert attempts == []


def gcp_config(fake: FakeCompute | None, **sections: dict) -> Config:
    """A gcp cluster of 3 controllers and 1 worker, pointed at the fake (or at Google, if None)."""
    raw: dict[str, dict] = {
        "provider": {"kind": "gcp"},
        "gcp": {"project": PROJECT, **({"api_endpoint": fake.endpoint} if fake else {})},
        "topology": {"controllers": 3, "workers": 1},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return config_mod.from_dict(raw)


def provider(config: Config) -> GcpProvider:
    """A fresh provider object, as a new khwtui process would make it (no memory of runs)."""
    return GcpProvider(config, Topology(config), Path("/nonexistent-state"), CLIENT_KEY)


def setup_api(fake: FakeCompute) -> GceApi:
    """The API wrapper, for making what other stages or other people would have made."""
    return GceApi(PROJECT, REGION, ZONE, fake.endpoint, AnonymousCredentials())


def quiet(line: str) -> None:
    """A log sink for runs whose lines the test does not read."""


READS_SENT_AS_POST = ("/wait", "/listInstances")  # operations.wait, instanceGroups.listInstances


def mutating(fake: FakeCompute, since: int = 0) -> list[tuple[str, str]]:
    """Calls that change something (some reads are POSTs too)."""
    return [
        (r.method, r.path)
        for r in fake.requests[since:]
        if r.method == "DELETE" or (r.method == "POST" and not r.path.endswith(READS_SENT_AS_POST))
    ]


def insert_requests(fake: FakeCompute) -> dict[tuple[str, str], list]:
    """(collection, name) -> the insert requests sent for it, in order."""
    sent: dict[tuple[str, str], list] = {}
    for r in fake.requests:
        collection = r.path.rsplit("/", 1)[1]
        if r.method == "POST" and collection in KINDS:
            sent.setdefault((collection, r.body["name"]), []).append(r)
    return sent


def everything(fake: FakeCompute) -> set[tuple[str, str]]:
    return {(collection, r["name"]) for collection in [*KINDS] for r in fake.resources(collection)}


def served_key(fake: FakeCompute, name: str) -> str:
    return f"ssh-ed25519 {public_key_base64(fake.backing.private_key(name))}"


# --- ensure -------------------------------------------------------------------------------------


async def test_ensure_creates_exactly_the_planned_resources_with_kthw_properties() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake)
        topo, gcp = Topology(config), provider(config)
        endpoints = await gcp.ensure(quiet)

        sent = insert_requests(fake)
        assert {(KINDS[col].noun, name) for col, name in sent} == {(r.kind, r.name) for r in gcp.plan().resources if not r.stage}
        assert len(sent) == 10 and all(len(reqs) == 1 for reqs in sent.values())
        assert all(reqs[0].query.get("requestId") for reqs in sent.values())
        body = {key: reqs[0].body for key, reqs in sent.items()}
        names = topo.names

        assert body["networks", names.network] == {"name": names.network, "autoCreateSubnetworks": False, "description": MARKER}
        subnet = body["subnetworks", names.subnet]
        assert (subnet["ipCidrRange"], subnet["network"], subnet["description"]) == ("10.240.0.0/24", f"global/networks/{names.network}", MARKER)
        internal = body["firewalls", names.allow_internal]
        assert internal["allowed"] == [{"IPProtocol": "tcp"}, {"IPProtocol": "udp"}, {"IPProtocol": "icmp"}]
        assert internal["sourceRanges"] == ["10.240.0.0/24", "10.200.0.0/16"]
        external = body["firewalls", names.allow_external]
        assert external["allowed"] == [{"IPProtocol": "tcp", "ports": ["22", "6443"]}, {"IPProtocol": "icmp"}]
        assert external["sourceRanges"] == ["0.0.0.0/0"]
        for rule in (internal, external):  # KTHW: no target tags, so the rules cover every node
            assert (rule["network"], rule["direction"], rule.get("targetTags"), rule["description"]) == (f"global/networks/{names.network}", "INGRESS", None, MARKER)
        # its labels are set by setLabels: the API keeps none sent on an address's insert
        assert body["addresses", names.address] == {"name": names.address, "addressType": "EXTERNAL", "description": MARKER}
        assert fake.resources("addresses")[0]["labels"] == LABELS
        nodes_api = body["firewalls", names.allow_node_api]
        served = {vm["name"]: vm["networkInterfaces"][0]["accessConfigs"][0]["natIP"] for vm in fake.resources("instances")}
        assert nodes_api["allowed"] == [{"IPProtocol": "tcp", "ports": ["6443"]}] and nodes_api["targetTags"] == ["controller"]
        assert sorted(nodes_api["sourceRanges"]) == sorted(f"{ip}/32" for ip in served.values())

        for node in topo.nodes:
            vm = body["instances", node.name]
            assert vm["machineType"] == f"zones/{ZONE}/machineTypes/e2-standard-2"
            assert vm["canIpForward"] is True
            assert vm["tags"] == {"items": ["kubernetes-the-hard-way", node.role]}
            assert vm["labels"] == LABELS
            metadata = {item["key"]: item["value"] for item in vm["metadata"]["items"]}
            wanted = {"ssh-keys": f"khwtui:{CLIENT_KEY}", "enable-oslogin": "FALSE", "enable-guest-attributes": "TRUE"}
            assert metadata == ({"pod-cidr": node.pod_cidr} if node.role == "worker" else {}) | wanted
            [disk] = vm["disks"]
            assert (disk["boot"], disk["autoDelete"], disk["type"]) == (True, True, "PERSISTENT")
            params = disk["initializeParams"]
            assert (params["sourceImage"], int(params["diskSizeGb"]), params["labels"]) == ("projects/debian-cloud/global/images/family/debian-12", 50, LABELS)
            [nic] = vm["networkInterfaces"]
            assert (nic["networkIP"], nic["subnetwork"]) == (node.internal_ip, f"regions/{REGION}/subnetworks/{names.subnet}")
            assert nic["accessConfigs"] == [{"name": "external-nat", "type": "ONE_TO_ONE_NAT"}]
            assert vm["serviceAccounts"] == [{"email": "default", "scopes": KTHW_SCOPES}]
        assert [n.name for n in topo.nodes] == ["controller-0", "controller-1", "controller-2", "worker-0"]
        assert topo.node("worker-0").pod_cidr == "10.200.0.0/24"

        served = {vm["name"]: vm for vm in fake.resources("instances")}
        assert [ep.name for ep in endpoints] == [n.name for n in topo.nodes]
        for ep in endpoints:
            nic = served[ep.name]["networkInterfaces"][0]
            nat = nic["accessConfigs"][0]["natIP"]
            assert (ep.role, ep.internal_ip, ep.external_ip, ep.ssh_host, ep.ssh_port) == (topo.node(ep.name).role, nic["networkIP"], nat, nat, 22)
            assert ep.host_key == served_key(fake, ep.name)
        assert gcp.api_address() == fake.resources("addresses")[0]["address"]
        assert len(fake.resources("disks")) == 4


async def test_a_second_ensure_and_nodes_change_nothing() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake)
        assert await provider(config).nodes() == []
        first = await provider(config).ensure(quiet)
        before = len(fake.requests)
        lines: list[str] = []
        again = provider(config)
        assert await again.ensure(lines.append) == first
        read_back = provider(config)
        assert await read_back.nodes() == first
        assert read_back.api_address() == fake.resources("addresses")[0]["address"]
        assert mutating(fake, before) == []
        assert sum("exists, adopted" in line for line in lines) == 10


async def test_faults_and_lost_replies_end_in_the_same_state_without_duplicates() -> None:
    with FakeCompute(project=PROJECT, fault_rate=0.1, lose_reply_rate=0.5, seed=3) as fake:
        config = gcp_config(fake)
        endpoints = await provider(config).ensure(quiet)

        statuses = [r.status for r in fake.requests]
        assert statuses.count(429) + statuses.count(503) > 0
        sent = insert_requests(fake)
        assert any(len(reqs) > 1 for reqs in sent.values())  # retried...
        assert all(len({r.query["requestId"] for r in reqs}) == 1 for reqs in sent.values())  # ...with one requestId
        planned = {(r.kind, r.name) for r in provider(config).plan().resources if not r.stage}
        made = {(KINDS[col].noun, name) for col, name in everything(fake) if col != "disks"}
        assert made == planned
        assert sorted(d["name"] for d in fake.resources("disks")) == ["controller-0", "controller-1", "controller-2", "worker-0"]
        assert [ep.host_key for ep in endpoints] == [served_key(fake, ep.name) for ep in endpoints]


async def test_instances_are_created_in_parallel() -> None:
    with FakeCompute(project=PROJECT, op_latency=0.5) as fake:
        await provider(gcp_config(fake, topology={"workers": 3})).ensure(quiet)
        assert len(fake.resources("instances")) == 6
        assert fake.max_in_flight("instances.insert") >= 4


async def test_an_existing_resource_that_just_appeared_is_adopted() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake)
        network = provider(config).desired.network.resource
        await setup_api(fake).insert("networks", network)  # e.g. an interrupted run's insert
        fake.inject("GET", f"/global/networks/{network.name}$", 404, times=2)  # our reads (preflight's, ensure's) miss it
        lines: list[str] = []
        await provider(config).ensure(lines.append)
        assert f"network {network.name}: appeared meanwhile, adopted" in lines
        assert len(fake.resources("networks")) == 1


async def test_host_keys_are_polled_from_the_insert_onwards_at_a_fixed_interval() -> None:
    with FakeCompute(project=PROJECT, op_latency=0.3, hostkey_delay=5.0) as fake:
        endpoints = await provider(gcp_config(fake, topology={"controllers": 1})).ensure(quiet)
        assert [ep.host_key for ep in endpoints] == [served_key(fake, "controller-0"), served_key(fake, "worker-0")]
        inserted = {s.target: s.ended for s in fake.operation_spans() if s.kind == "instances.insert"}
        for name in ("controller-0", "worker-0"):
            polls = [r for r in fake.requests if r.path.endswith(f"/instances/{name}/getGuestAttributes")]
            assert polls[0].received < inserted[name]  # not only once the instance runs
            # 5 s until published: a 1 s interval polls 5 or 6 times in vain, a backoff from 1 s by 1.5 at most 3
            assert [r.status for r in polls].count(404) >= 4 and polls[-1].status == 200


async def test_an_instance_insert_waits_for_its_subnet_only() -> None:
    with FakeCompute(project=PROJECT, op_latency=0.4) as fake:
        # the first firewall and address inserts fail transiently: their retries end a second later
        fake.inject_op_error("POST", "/firewalls$", "INTERNAL_ERROR", "Internal error. Please try again.", 500)
        fake.inject_op_error("POST", "/addresses$", "INTERNAL_ERROR", "Internal error. Please try again.", 500)
        config = gcp_config(fake, topology={"controllers": 1})
        await provider(config).ensure(quiet)
        ended: dict[str, float] = {}  # when the last operation of each kind was DONE (the node API rule follows the instances)
        for span in fake.operation_spans():
            if span.target != Topology(config).names.allow_node_api:
                ended[span.kind] = max(ended.get(span.kind, 0.0), span.ended)
        instance_inserts = [r.received for r in fake.requests if r.method == "POST" and r.path.endswith("/instances")]
        assert len(instance_inserts) == 2
        assert min(instance_inserts) > ended["subnetworks.insert"]
        assert max(instance_inserts) < min(ended["addresses.insert"], ended["firewalls.insert"])


async def test_operation_waits_do_not_queue_behind_a_fixed_thread_count() -> None:
    with FakeCompute(project=PROJECT, op_latency=2.0, wait_cap=5.0) as fake:
        api = setup_api(fake)
        await asyncio.gather(*(api.insert("networks", c.Network(name=f"n{i}", auto_create_subnetworks=False)) for i in range(12)))
        waits = [r for r in fake.requests if r.path.endswith("/wait")]
        # the most waits the fake was serving at once: each blocks until its operation is DONE
        peak = max(sum(1 for w in waits if w.received <= r.received < w.answered) for r in waits)
        assert peak > MAX_IN_FLIGHT  # the call pool's size: 12 when nothing is late, 8 when waits queue there


class EcdsaOnly:
    """A backing whose machines publish no ed25519 host key."""

    KEY = asyncssh.generate_private_key("ecdsa-sha2-nistp256").export_public_key().decode().split()[1]

    def __init__(self) -> None:
        self._hosts = itertools.count(2)

    def create(self, name: str, network_ip: str) -> tuple[str, dict[str, str]]:
        return f"127.0.9.{next(self._hosts)}", {"ecdsa-sha2-nistp256": self.KEY}

    def delete(self, name: str) -> None:
        """Nothing stands behind the instance."""


async def test_a_node_without_an_ed25519_host_key_is_refused() -> None:
    with FakeCompute(project=PROJECT, backing=EcdsaOnly()) as fake:
        with pytest.raises(GceError) as caught:
            await provider(gcp_config(fake, topology={"controllers": 1, "workers": 1})).ensure(quiet)
        text = str(caught.value)
        assert "instance controller-0 published no valid ssh-ed25519 host key (found: ecdsa-sha2-nistp256)" in text
        assert "instance worker-0" in text and caught.value.exit_code == EXIT_FAILED


async def test_a_failed_operation_reports_the_api_message_and_names_the_quota() -> None:
    with FakeCompute(project=PROJECT) as fake:
        fake.inject_op_error("POST", r"/instances$", "QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-west1.", 403)
        with pytest.raises(GceError) as caught:
            await provider(gcp_config(fake)).ensure(quiet)
        text = str(caught.value)
        assert text.startswith("creating instance ") and "failed: Quota 'CPUS' exceeded. Limit: 8.0 in region us-west1." in text
        assert "fix: raise the CPUS quota of region us-west1" in text and len(text.splitlines()) == 1


async def test_a_project_turning_os_login_on_gets_a_warning_and_the_instances_own_false() -> None:
    with FakeCompute(project=PROJECT, project_metadata={"enable-oslogin": "TRUE"}) as fake:
        lines: list[str] = []
        await provider(gcp_config(fake, topology={"controllers": 1, "workers": 1})).ensure(lines.append)
        assert [line for line in lines if line.startswith("warning: ")] == [(
            f"warning: project {PROJECT} sets enable-oslogin=TRUE; khwtui's instances set enable-oslogin=FALSE, which wins unless "
            "an organization policy enforces OS Login (constraints/compute.requireOsLogin): then the instance inserts are refused "
            "and khwtui stops, naming the policy"
        )]
        assert {fake.instance_metadata(vm["name"])["enable-oslogin"] for vm in fake.resources("instances")} == {"FALSE"}


async def test_an_organization_policy_enforcing_os_login_stops_the_run_in_one_line_naming_it() -> None:
    with FakeCompute(project=PROJECT, org_policies={"compute.requireOsLogin"}, project_metadata={"enable-oslogin": "TRUE"}) as fake:
        lines: list[str] = []
        with pytest.raises(GceError) as caught:
            await provider(gcp_config(fake)).ensure(lines.append)
        assert any(line.startswith(f"warning: project {PROJECT} sets enable-oslogin=TRUE") for line in lines)
        [line] = str(caught.value).splitlines()  # every instance meets it: said once
        assert line.startswith(f"gcp.project: organization policy constraints/compute.requireOsLogin enforces OS Login in project {PROJECT}")
        assert "fix: " in line and "compute.requireOsLogin" in line.split("fix: ")[1]
        assert caught.value.exit_code == EXIT_USAGE
        assert fake.resources("instances") == []


# --- refusing what is not ours to adopt ----------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "message"),
    [
        (
            {"gcp": {"admin_cidrs": ["203.0.113.0/24"]}},
            "firewall kubernetes-the-hard-way-allow-external exists with sourceRanges [203.0.113.0/24], wanted [0.0.0.0/0]",
        ),
        ({"gcp": {"machine_type": "e2-standard-4"}}, "instance controller-0 exists with machineType e2-standard-4, wanted e2-standard-2"),
    ],
)
async def test_a_resource_with_another_spec_stops_the_run_naming_the_field(before: dict, message: str) -> None:
    with FakeCompute(project=PROJECT) as fake:
        await provider(gcp_config(fake, **before)).ensure(quiet)
        count = len(fake.requests)
        with pytest.raises(ResourceConflict) as caught:
            await provider(gcp_config(fake)).ensure(quiet)
        assert message in str(caught.value)
        assert caught.value.exit_code == EXIT_USAGE
        assert mutating(fake, count) == []


async def test_an_instance_of_another_cluster_is_left_alone() -> None:
    with FakeCompute(project=PROJECT) as fake:
        small = {"controllers": 1, "workers": 1}
        await provider(gcp_config(fake, cluster={"name": "alpha"}, topology=small)).ensure(quiet)
        theirs = fake.resources("instances")
        count = len(fake.requests)
        with pytest.raises(ResourceConflict) as caught:
            await provider(gcp_config(fake, cluster={"name": "beta"}, topology=small)).ensure(quiet)
        lines = str(caught.value).splitlines()
        assert lines == [
            f"topology.name_prefix: instance {name} already exists and belongs to cluster alpha; "
            "khwtui never adopts or deletes it; fix: choose another topology.name_prefix"
            for name in ("controller-0", "worker-0")
        ]
        assert mutating(fake, count) == []  # nothing of beta was made either
        assert fake.resources("instances") == theirs


async def test_a_network_nobody_claims_is_not_adopted() -> None:
    with FakeCompute(project=PROJECT) as fake:
        await setup_api(fake).insert("networks", c.Network(name="kubernetes-the-hard-way", auto_create_subnetworks=False))
        with pytest.raises(ResourceConflict, match=r"^cluster\.name: network kubernetes-the-hard-way already exists and belongs to no khwtui cluster .*fix: choose another cluster\.name$"):
            await provider(gcp_config(fake)).ensure(quiet)


# --- preflight ----------------------------------------------------------------------------------


async def test_no_credentials_is_one_line_with_the_fix_and_no_traffic(outside: list[str]) -> None:
    gcp = provider(gcp_config(None))  # Google's endpoint: ADC needed, and there is none
    with pytest.raises(PreflightError) as caught:
        await gcp.ensure(quiet)
    [line] = str(caught.value).splitlines()
    assert "no Google credentials" in line and "`gcloud auth application-default login`" in line and "GOOGLE_APPLICATION_CREDENTIALS" in line
    assert caught.value.exit_code == EXIT_USAGE
    assert outside == []


async def test_no_project_is_one_line_with_the_fix_and_no_request() -> None:
    with FakeCompute(project=PROJECT) as fake:
        with pytest.raises(PreflightError) as caught:
            await provider(gcp_config(fake, gcp={"project": ""})).ensure(quiet)
        assert str(caught.value) == "gcp.project: no GCP project is set; fix: set gcp.project in the config, or CLOUDSDK_CORE_PROJECT"
        assert caught.value.exit_code == EXIT_USAGE
        assert fake.requests == []


async def test_preflight_names_every_problem_with_its_fix_before_creating_anything() -> None:
    with FakeCompute(project=PROJECT, quotas={"CPUS": 4, "DISKS_TOTAL_GB": 150, "CPUS_ALL_REGIONS": 6, "IN_USE_ADDRESSES": 4}) as fake:
        with pytest.raises(PreflightError) as caught:
            await provider(gcp_config(fake, gcp={"image_family": "debian-7"})).ensure(quiet)
        lines = str(caught.value).splitlines()
        assert [line.split(":")[0] for line in lines] == [
            "gcp.image_family", "quota CPUS of region us-west1", "quota CPUS_ALL_REGIONS of project khwtui-test (all regions)", "quota DISKS_TOTAL_GB of region us-west1",
            "quota IN_USE_ADDRESSES of region us-west1",
        ]
        assert "8 more needed, 4 of 4 free" in lines[1] and "200 more needed, 150 of 150 free" in lines[3]
        assert "5 more needed, 4 of 4 free" in lines[4]  # 4 nodes' external addresses and the forwarding rule's
        assert all("; fix: " in line for line in lines)
        with pytest.raises(PreflightError) as caught:
            await provider(gcp_config(fake, gcp={"machine_type": "e9-huge"})).preflight()
        assert str(caught.value).splitlines()[0].startswith("gcp.machine_type: e9-huge does not exist in zone us-west1-c; fix: ")
        assert mutating(fake) == []


# --- plan -----------------------------------------------------------------------------------------


async def test_plan_needs_no_credentials_and_lists_every_stages_resources_and_prices_them(outside: list[str]) -> None:
    plan = provider(gcp_config(None)).plan()
    assert [(r.kind, r.name) for r in plan.resources] == [
        ("network", "kubernetes-the-hard-way"),
        ("subnet", "kubernetes-the-hard-way-subnet"),
        ("firewall", "kubernetes-the-hard-way-allow-internal"),
        ("firewall", "kubernetes-the-hard-way-allow-external"),
        ("address", "kubernetes-the-hard-way-api"),
        ("instance", "controller-0"),
        ("instance", "controller-1"),
        ("instance", "controller-2"),
        ("instance", "worker-0"),
        ("firewall", "kubernetes-the-hard-way-allow-nodes-api"),
        ("legacy health check", "kubernetes-the-hard-way-healthz"),
        ("target pool", "kubernetes-the-hard-way-target-pool"),
        ("firewall", "kubernetes-the-hard-way-allow-health-check"),
        ("forwarding rule", "kubernetes-the-hard-way-forwarding-rule"),
        ("route", "kubernetes-the-hard-way-route-10-200-0-0-24"),
        ("firewall", "kubernetes-the-hard-way-allow-nginx-service"),
    ]
    details = {r.name: r.detail for r in plan.resources}
    assert details["kubernetes-the-hard-way-route-10-200-0-0-24"] == "10.200.0.0/24 via 10.240.0.20 (worker-0)"
    assert details["kubernetes-the-hard-way-forwarding-rule"] == "the static address:6443 to kubernetes-the-hard-way-target-pool"
    assert details["kubernetes-the-hard-way-allow-nodes-api"] == "tcp:6443 from the nodes' external addresses to the controllers"
    assert [r.stage for r in plan.resources] == [""] * 10 + ["frontend"] * 4 + ["routes", "smoke"]
    # 4 x (e2-standard-2 + its external IPv4 + 50 GB pd-standard) + the forwarding rule (holding the static address)
    assert plan.hourly_usd == pytest.approx(4 * (0.06701142 + 0.005 + 50 * 0.04 / 730) + 0.025)
    assert any("as of 2025-03-06" in note and "us-west1" in note and "/month" in note for note in plan.notes)
    backend = provider(gcp_config(None, gcp={"load_balancer": "backend-service"}, demo={"enabled": True}, topology={"controllers": 1, "workers": 2})).plan()
    assert [(r.kind, r.name) for r in backend.resources][7:] == [
        ("instance", "worker-1"),
        ("firewall", "kubernetes-the-hard-way-allow-nodes-api"),
        ("instance group", "kubernetes-the-hard-way-controllers"),
        ("health check", "kubernetes-the-hard-way-readyz"),
        ("backend service", "kubernetes-the-hard-way-api-backend"),
        ("firewall", "kubernetes-the-hard-way-allow-health-check"),
        ("forwarding rule", "kubernetes-the-hard-way-forwarding-rule"),
        ("route", "kubernetes-the-hard-way-route-10-200-0-0-24"),
        ("route", "kubernetes-the-hard-way-route-10-200-1-0-24"),
        ("firewall", "kubernetes-the-hard-way-allow-nginx-service"),
        ("firewall", "kubernetes-the-hard-way-allow-demo"),
    ]
    unpriced = provider(gcp_config(None, gcp={"machine_type": "n2-standard-2"})).plan()
    assert unpriced.hourly_usd is None and any("no n2-standard-2" in note for note in unpriced.notes)
    with FakeCompute(project=PROJECT) as fake:
        provider(gcp_config(fake)).plan()
        assert fake.requests == []
    assert outside == []


def test_plan_reads_the_project_when_it_can_and_names_a_planned_name_held_by_an_unmarked_resource(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], outside: list[str]
) -> None:
    def plan(gcp: dict) -> int:
        config = tmp_path / "cluster.toml"
        config.write_text(tomli_w.dumps({"provider": {"kind": "gcp"}, "gcp": {"project": PROJECT, **gcp}, "topology": {"controllers": 1, "workers": 1}}))
        return main(["plan", "--config", str(config), "--state-dir", str(tmp_path / "state")])

    with FakeCompute(project=PROJECT) as fake:
        assert plan({"api_endpoint": fake.endpoint}) == 0
        assert f"note: project {PROJECT} holds none of these names but this cluster's" in capsys.readouterr().out
        asyncio.run(setup_api(fake).insert("networks", c.Network(name="kubernetes-the-hard-way", auto_create_subnetworks=False)))
        count = len(fake.requests)
        assert plan({"api_endpoint": fake.endpoint}) == 2
        out, err = capsys.readouterr()
        assert "Resources to create" in out and mutating(fake, count) == []
        assert err.splitlines() == [(
            "khwtui: cluster.name: network kubernetes-the-hard-way already exists and belongs to no khwtui cluster (it has no "
            "khwtui-cluster label or description); khwtui never adopts or deletes it; fix: choose another cluster.name"
        )]
    assert plan({}) == 0  # Google's endpoint, no credentials file: nothing is sent, and plan says what it did not check
    assert "note: planned names not checked against the project (no Application Default Credentials file); " in capsys.readouterr().out
    assert outside == []


# --- teardown -------------------------------------------------------------------------------------


async def add_later_stages(fake: FakeCompute, config: Config) -> None:
    """What the frontend, routes and smoke stages make, each marked by its description."""
    topo, cluster = Topology(config), config.cluster.name
    names, marker = topo.names, f"khwtui-cluster={cluster}"
    api = setup_api(fake)
    legacy = await asyncio.to_thread(
        requests.post,
        f"{fake.endpoint}/compute/v1/projects/{PROJECT}/global/httpHealthChecks",
        json={"name": names.http_health_check, "description": marker, "requestPath": "/healthz", "port": 80},
        timeout=10,
    )
    assert legacy.status_code == 200
    await api.insert("targetPools", c.TargetPool(name=names.target_pool, description=marker, health_checks=[f"global/httpHealthChecks/{names.http_health_check}"]))
    address = next(a["address"] for a in fake.resources("addresses") if a["name"] == names.address)
    rule = c.ForwardingRule(name=names.forwarding_rule, I_p_address=address, I_p_protocol="TCP", port_range="6443", target=f"regions/{REGION}/targetPools/{names.target_pool}", description=marker)
    await api.insert("forwardingRules", rule)
    check = c.HealthCheck(name=names.health_check, type_="HTTPS", https_health_check=c.HTTPSHealthCheck(port=6443, request_path="/readyz"), description=marker)
    await api.insert("healthChecks", check)
    await api.insert("instanceGroups", c.InstanceGroup(name=names.instance_group, network=f"global/networks/{names.network}", description=marker))
    backends = [c.Backend(group=f"zones/{ZONE}/instanceGroups/{names.instance_group}", balancing_mode="CONNECTION")]
    service = c.BackendService(name=names.backend_service, load_balancing_scheme="EXTERNAL", protocol="TCP", health_checks=[f"regions/{REGION}/healthChecks/{names.health_check}"], backends=backends, description=marker)
    await api.insert("backendServices", service)
    worker = topo.workers[0]
    route = c.Route(name=topo.route_names()[worker.name], network=f"global/networks/{names.network}", dest_range=worker.pod_cidr, next_hop_ip=worker.internal_ip, description=marker)
    await api.insert("routes", route)
    smoke = c.Firewall(name=names.allow_smoke, network=f"global/networks/{names.network}", allowed=[c.Allowed(I_p_protocol="tcp", ports=["30000-32767"])], description=marker)
    await api.insert("firewalls", smoke)


async def test_teardown_without_state_removes_the_cluster_and_nothing_of_another() -> None:
    with FakeCompute(project=PROJECT) as fake:
        alpha = gcp_config(fake, cluster={"name": "alpha"}, topology={"controllers": 2, "workers": 1})
        beta = gcp_config(fake, cluster={"name": "beta"}, topology={"controllers": 1, "workers": 1, "name_prefix": "beta"})
        await provider(alpha).ensure(quiet)
        await provider(beta).ensure(quiet)
        await add_later_stages(fake, alpha)
        await add_later_stages(fake, beta)
        # beta's, though its name starts with alpha's prefix: its description decides
        await setup_api(fake).insert(
            "firewalls",
            c.Firewall(name="alpha-allow-extra", network="global/networks/beta", allowed=[c.Allowed(I_p_protocol="icmp")], description="khwtui-cluster=beta"),
        )
        before = everything(fake)
        of_beta = {(col, name) for col, name in before if name.startswith("beta")} | {("firewalls", "alpha-allow-extra")}
        assert len(of_beta) == 19

        gone = provider(alpha)  # a fresh object: no state, no memory of the runs above
        planned = gone.teardown_plan()
        count = len(fake.requests)
        await gone.teardown(quiet)

        assert everything(fake) == of_beta
        deleted = [(r.path.split("/")[-2], r.path.split("/")[-1]) for r in fake.requests[count:] if r.method == "DELETE"]
        assert sorted(deleted) == sorted(before - of_beta - {("disks", n) for n in ("controller-0", "controller-1", "worker-0")})
        assert sorted((r.kind, r.name) for r in planned) == sorted((KINDS[col].noun, name) for col, name in deleted)
        order = [col for col, _ in deleted]
        groups = [("forwardingRules",), ("targetPools", "backendServices"), ("httpHealthChecks", "healthChecks"), ("instanceGroups",), ("instances",), ("addresses",), ("routes",), ("firewalls",), ("subnetworks",), ("networks",)]
        positions = [[i for i, col in enumerate(order) if col in group] for group in groups]
        assert all(max(earlier) < min(later) for earlier, later in itertools.pairwise(positions))


async def test_teardown_is_idempotent_and_a_delete_that_finds_nothing_is_done() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, topology={"controllers": 1, "workers": 1})
        await provider(config).ensure(quiet)
        fake.inject("DELETE", r"/addresses/", 404)
        lines: list[str] = []
        await provider(config).teardown(lines.append)
        assert "address kubernetes-the-hard-way-api: already gone" in lines
        assert everything(fake) == {("addresses", "kubernetes-the-hard-way-api")}  # the injected 404 spared it
        await provider(config).teardown(quiet)
        count = len(fake.requests)
        await provider(config).teardown(quiet)
        assert everything(fake) == set() and mutating(fake, count) == []
        assert provider(config).teardown_plan() == []


# --- what is not ours, GCE's transient operation errors ---------------------------------------------


async def test_unmarked_resources_named_like_the_clusters_are_never_deleted_and_are_named_as_conflicts() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, topology={"controllers": 1, "workers": 1})
        names, api = Topology(config).names, setup_api(fake)
        await api.insert("networks", c.Network(name=names.network, auto_create_subnetworks=False))  # someone else's, no marker
        other = "global/networks/kubernetes-the-hard-way"
        await api.insert("firewalls", c.Firewall(name=f"{names.network}-allow-ssh", network=other, allowed=[c.Allowed(I_p_protocol="tcp", ports=["22"])]))
        await api.insert("subnetworks", c.Subnetwork(name="theirs", network=other, ip_cidr_range="10.240.0.0/24", region=REGION))
        await api.insert("routes", c.Route(name=names.route("10.200.0.0/24"), network=other, dest_range="10.200.0.0/24", next_hop_ip="10.240.0.20"))
        theirs = everything(fake)

        with pytest.raises(ResourceConflict) as refused:
            await provider(config).ensure(quiet)
        assert refused.value.exit_code == EXIT_USAGE and mutating(fake, len(fake.requests)) == []
        assert str(refused.value).splitlines()[0] == (
            "cluster.name: network kubernetes-the-hard-way already exists and belongs to no khwtui cluster (it has no khwtui-cluster "
            "label or description); khwtui never adopts or deletes it; fix: choose another cluster.name"
        )
        assert provider(config).teardown_plan() == []
        count = len(fake.requests)
        with pytest.raises(LeftInPlace) as kept:
            await provider(config).teardown(quiet)
        assert mutating(fake, count) == [] and everything(fake) == theirs
        lines = str(kept.value).splitlines()
        assert [line.split(" already exists")[0] for line in lines] == [
            "cluster.name: network kubernetes-the-hard-way", "cluster.name: route kubernetes-the-hard-way-route-10-200-0-0-24",
        ]
        assert kept.value.exit_code == EXIT_USAGE and all(line.endswith("fix: choose another cluster.name") for line in lines)


async def test_a_later_stages_name_held_by_an_unmarked_resource_stops_up_before_anything_is_made() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, topology={"controllers": 1, "workers": 1})
        await setup_api(fake).insert("httpHealthChecks", HttpHealthCheck("kubernetes-the-hard-way-healthz"))
        with pytest.raises(ResourceConflict, match=r"^cluster\.name: legacy health check kubernetes-the-hard-way-healthz already exists and belongs to no khwtui cluster"):
            await provider(config).ensure(quiet)
        assert [c for c, _ in everything(fake)] == ["httpHealthChecks"]


async def test_with_three_in_ten_operations_failing_transiently_one_run_converges() -> None:
    with FakeCompute(project=PROJECT, op_fail_rate=0.3, seed=5) as fake:
        config = gcp_config(fake, topology={"controllers": 1, "workers": 1})
        gcp = provider(config)
        lines: list[str] = []
        await gcp.ensure(lines.append)
        await gcp.ensure_frontend(lines.append)
        await gcp.ensure_routes(lines.append)

        failed = [r for r in fake.requests if r.path.endswith("/wait")]
        assert failed  # waited on, and some of them ended in the internal error:
        made = {(KINDS[col].noun, name) for col, name in everything(fake) if col != "disks"}
        assert made == {(r.kind, r.name) for r in gcp.plan().resources if r.stage != "smoke"}
        assert fake.resources("addresses")[0]["labels"] == LABELS and fake.resources("forwardingRules")[0]["labels"] == LABELS
        retried = [key for key, reqs in insert_requests(fake).items() if len({r.query["requestId"] for r in reqs}) > 1]
        assert retried  # a new requestId for each new attempt
        await provider(config).teardown(quiet)
        assert everything(fake) == set()


async def test_a_permanent_operation_error_is_not_retried() -> None:
    with FakeCompute(project=PROJECT) as fake:
        fake.inject_op_error("POST", r"/global/networks$", "INVALID_USAGE", "Invalid value for field 'resource.mtu'.", 400)
        with pytest.raises(GceError, match=r"^creating network kubernetes-the-hard-way failed: Invalid value for field 'resource.mtu'\.$"):
            await provider(gcp_config(fake)).ensure(quiet)
        assert len(insert_requests(fake)["networks", "kubernetes-the-hard-way"]) == 1
