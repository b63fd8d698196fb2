"""The Compute Engine fake, driven by the real google-cloud-compute client.

Every call goes through compute_v1 clients pointed at the fake (or, for the legacy HTTP health
checks the library lacks, through AuthorizedSession), and every operation is waited for with
the operations client of its scope, as the gcp provider must do.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from fakegce import FakeCompute, GeneratedBacking
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import AuthorizedSession
from google.cloud import compute_v1 as c

P, R, Z = "p1", "us-west1", "us-west1-c"
DEBIAN = "projects/debian-cloud/global/images/family/debian-12"
DONE = c.Operation.Status.DONE


@pytest.fixture(autouse=True)
def _no_cloud_config(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))


class Gce:
    """The real clients, all built with the fake's endpoint and anonymous credentials."""

    def __init__(self, fake: FakeCompute) -> None:
        kw = {"credentials": AnonymousCredentials(), "client_options": ClientOptions(api_endpoint=fake.endpoint)}
        self.endpoint = fake.endpoint
        self.networks = c.NetworksClient(**kw)
        self.subnetworks = c.SubnetworksClient(**kw)
        self.firewalls = c.FirewallsClient(**kw)
        self.routes = c.RoutesClient(**kw)
        self.addresses = c.AddressesClient(**kw)
        self.instances = c.InstancesClient(**kw)
        self.disks = c.DisksClient(**kw)
        self.target_pools = c.TargetPoolsClient(**kw)
        self.health_checks = c.RegionHealthChecksClient(**kw)
        self.backend_services = c.RegionBackendServicesClient(**kw)
        self.groups = c.InstanceGroupsClient(**kw)
        self.rules = c.ForwardingRulesClient(**kw)
        self.images = c.ImagesClient(**kw)
        self.projects = c.ProjectsClient(**kw)
        self.regions = c.RegionsClient(**kw)
        self.machine_types = c.MachineTypesClient(**kw)
        self.zone_ops = c.ZoneOperationsClient(**kw)
        self.region_ops = c.RegionOperationsClient(**kw)
        self.global_ops = c.GlobalOperationsClient(**kw)
        self.session = AuthorizedSession(AnonymousCredentials())

    def finish(self, op) -> c.Operation:
        """Wait on the operation's own scope until DONE; raise its error as the client would."""
        if op.zone:
            client, where = self.zone_ops, {"zone": op.zone.rsplit("/", 1)[1]}
        elif op.region:
            client, where = self.region_ops, {"region": op.region.rsplit("/", 1)[1]}
        else:
            client, where = self.global_ops, {}
        deadline = time.monotonic() + 10
        while (done := client.wait(project=P, operation=op.name, **where)).status != DONE:
            assert time.monotonic() < deadline, f"{op.name} never finished"
        if done.error.errors:
            message = "; ".join(e.message for e in done.error.errors)
            raise exceptions.from_http_status(done.http_error_status_code, message, errors=list(done.error.errors))
        return done

    def legacy_health_checks(self, suffix: str = "") -> str:
        return f"{self.endpoint}/compute/v1/projects/{P}/global/httpHealthChecks{suffix}"

    def raw(self, method: str, url: str, body: dict | None = None) -> c.Operation:
        """A raw REST call (for what the library lacks), errors raised as the clients raise them."""
        reply = self.session.request(method, url, json=body)
        if reply.status_code >= 400:
            raise exceptions.from_http_response(reply)
        return c.Operation.from_json(reply.text, ignore_unknown_fields=True)


@pytest.fixture
def fake():
    with FakeCompute() as running:
        yield running


@pytest.fixture
def gce(fake: FakeCompute) -> Gce:
    return Gce(fake)


def vm(
    name: str,
    *,
    ip: str = "",
    labels: dict | None = None,
    metadata: dict | None = None,
    auto_delete: bool = True,
    zone: str = Z,
    machine: str = "e2-standard-2",
    image: str = DEBIAN,
    tags: list[str] | None = None,
) -> c.Instance:
    """A KTHW-style node: boot disk from an image family, one NIC with external NAT."""
    items = [c.Items(key=k, value=v) for k, v in (metadata or {"enable-guest-attributes": "TRUE"}).items()]
    return c.Instance(
        name=name,
        machine_type=f"zones/{zone}/machineTypes/{machine}",
        can_ip_forward=True,
        tags=c.Tags(items=tags or []),
        labels=labels or {},
        metadata=c.Metadata(items=items),
        disks=[
            c.AttachedDisk(
                boot=True,
                auto_delete=auto_delete,
                type_="PERSISTENT",
                initialize_params=c.AttachedDiskInitializeParams(source_image=image, disk_size_gb=20),
            )
        ],
        network_interfaces=[
            c.NetworkInterface(
                subnetwork=f"regions/{R}/subnetworks/subnet",
                network_i_p=ip,
                access_configs=[c.AccessConfig(name="external-nat", type_="ONE_TO_ONE_NAT")],
            )
        ],
    )


def build_network(gce: Gce) -> None:
    """Network "net" with subnet "subnet" (10.240.0.0/24) in us-west1."""
    gce.finish(gce.networks.insert(project=P, network_resource=c.Network(name="net", auto_create_subnetworks=False)))
    subnet = c.Subnetwork(name="subnet", ip_cidr_range="10.240.0.0/24", network=f"projects/{P}/global/networks/net")
    gce.finish(gce.subnetworks.insert(project=P, region=R, subnetwork_resource=subnet))


def add_vm(gce: Gce, name: str, **kw) -> c.Instance:
    gce.finish(gce.instances.insert(project=P, zone=kw.get("zone", Z), instance_resource=vm(name, **kw)))
    return gce.instances.get(project=P, zone=kw.get("zone", Z), instance=name)


def add_backend_service(gce: Gce, *, check: str, group: str) -> None:
    """A regional external passthrough backend service "api" over one group."""
    service = c.BackendService(
        name="api",
        load_balancing_scheme="EXTERNAL",
        protocol="TCP",
        health_checks=[f"regions/{R}/healthChecks/{check}"],
        backends=[c.Backend(group=f"zones/{Z}/instanceGroups/{group}", balancing_mode="CONNECTION")],
    )
    gce.finish(gce.backend_services.insert(project=P, region=R, backend_service_resource=service))


def reason(error: exceptions.GoogleAPICallError) -> str:
    return error.errors[0]["reason"]


# -- every kind: insert, wait, get ------------------------------------------------------------


def test_network_subnet_firewall_route_and_address_round_trip(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    firewall = c.Firewall(
        name="allow-external",
        network="global/networks/net",
        source_ranges=["0.0.0.0/0"],
        allowed=[c.Allowed(I_p_protocol="tcp", ports=["22", "6443"]), c.Allowed(I_p_protocol="icmp")],
    )
    gce.finish(gce.firewalls.insert(project=P, firewall_resource=firewall))
    route = c.Route(
        name="route-10-200-0-0-24", network="global/networks/net", dest_range="10.200.0.0/24", next_hop_ip="10.240.0.20"
    )
    gce.finish(gce.routes.insert(project=P, route_resource=route))
    gce.finish(gce.addresses.insert(project=P, region=R, address_resource=c.Address(name="api")))

    net = gce.networks.get(project=P, network="net")
    assert net.subnetworks == [f"https://www.googleapis.com/compute/v1/projects/{P}/regions/{R}/subnetworks/subnet"]
    assert gce.subnetworks.get(project=P, region=R, subnetwork="subnet").gateway_address == "10.240.0.1"
    assert gce.firewalls.get(project=P, firewall="allow-external").allowed[0].ports == ["22", "6443"]
    assert gce.routes.get(project=P, route="route-10-200-0-0-24").next_hop_ip == "10.240.0.20"
    address = gce.addresses.get(project=P, region=R, address="api")
    assert (address.status, ipaddress.ip_address(address.address).is_loopback) == ("RESERVED", True)
    assert [r.body for r in fake.requests if r.method == "POST" and r.path.endswith("/global/networks")] == [
        {"name": "net", "autoCreateSubnetworks": False}
    ]


def test_instance_round_trip_with_its_boot_disk(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    node = add_vm(gce, "controller-0", ip="10.240.0.10", labels={"khwtui-cluster": "k"})
    nic = node.network_interfaces[0]
    assert (node.status, nic.network_i_p, node.labels["khwtui-cluster"]) == ("RUNNING", "10.240.0.10", "k")
    assert ipaddress.ip_address(nic.access_configs[0].nat_i_p).is_loopback
    assert node.machine_type.endswith(f"zones/{Z}/machineTypes/e2-standard-2")
    disk = gce.disks.get(project=P, zone=Z, disk="controller-0")
    assert (disk.size_gb, disk.users, node.disks[0].source) == (20, [node.self_link], disk.self_link)
    second = add_vm(gce, "worker-0")
    assert second.network_interfaces[0].network_i_p == "10.240.0.2"  # first free after the gateway
    assert second.network_interfaces[0].access_configs[0].nat_i_p != nic.access_configs[0].nat_i_p


def test_target_pool_load_balancer_round_trip(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    add_vm(gce, "controller-0")
    check = {"name": "api-health", "host": "kubernetes.default.svc", "requestPath": "/healthz"}
    gce.finish(gce.raw("POST", gce.legacy_health_checks(), check))
    pool = c.TargetPool(name="api-pool", health_checks=["global/httpHealthChecks/api-health"])
    gce.finish(gce.target_pools.insert(project=P, region=R, target_pool_resource=pool))
    members = c.TargetPoolsAddInstanceRequest(
        instances=[c.InstanceReference(instance=f"zones/{Z}/instances/controller-0")]
    )
    gce.finish(
        gce.target_pools.add_instance(
            project=P, region=R, target_pool="api-pool", target_pools_add_instance_request_resource=members
        )
    )
    gce.finish(gce.addresses.insert(project=P, region=R, address_resource=c.Address(name="api")))
    ip = gce.addresses.get(project=P, region=R, address="api").address
    rule = c.ForwardingRule(
        name="api-rule",
        I_p_address=ip,
        I_p_protocol="TCP",
        port_range="6443",
        target=f"projects/{P}/regions/{R}/targetPools/api-pool",
    )
    gce.finish(gce.rules.insert(project=P, region=R, forwarding_rule_resource=rule))

    got = gce.target_pools.get(project=P, region=R, target_pool="api-pool")
    assert [i.rsplit("/", 1)[1] for i in got.instances] == ["controller-0"]
    assert gce.rules.get(project=P, region=R, forwarding_rule="api-rule").I_p_address == ip
    address = gce.addresses.get(project=P, region=R, address="api")
    assert (address.status, [u.rsplit("/", 1)[1] for u in address.users]) == ("IN_USE", ["api-rule"])


def test_backend_service_load_balancer_round_trip(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    add_vm(gce, "controller-0")
    check = c.HealthCheck(
        name="api-health", type_="HTTP", http_health_check=c.HTTPHealthCheck(port=80, request_path="/healthz")
    )
    gce.finish(gce.health_checks.insert(project=P, region=R, health_check_resource=check))
    gce.finish(gce.groups.insert(project=P, zone=Z, instance_group_resource=c.InstanceGroup(name="controllers")))
    join = c.InstanceGroupsAddInstancesRequest(
        instances=[c.InstanceReference(instance=f"zones/{Z}/instances/controller-0")]
    )
    gce.finish(
        gce.groups.add_instances(
            project=P, zone=Z, instance_group="controllers", instance_groups_add_instances_request_resource=join
        )
    )
    add_backend_service(gce, check="api-health", group="controllers")
    rule = c.ForwardingRule(
        name="api-rule",
        backend_service=f"regions/{R}/backendServices/api",
        ports=["6443"],
        load_balancing_scheme="EXTERNAL",
        labels={"khwtui-cluster": "k"},
    )
    gce.finish(gce.rules.insert(project=P, region=R, forwarding_rule_resource=rule))

    group = gce.groups.get(project=P, zone=Z, instance_group="controllers")
    assert (group.size, group.network.rsplit("/", 1)[1]) == (1, "net")
    assert (
        gce.backend_services.get(project=P, region=R, backend_service="api").backends[0].balancing_mode == "CONNECTION"
    )
    assert ipaddress.ip_address(gce.rules.get(project=P, region=R, forwarding_rule="api-rule").I_p_address).is_loopback


def test_backend_service_for_a_passthrough_balancer_needs_connection_mode(gce: Gce) -> None:
    build_network(gce)
    check = c.HealthCheck(name="hc", type_="TCP", tcp_health_check=c.TCPHealthCheck(port=6443))
    gce.finish(gce.health_checks.insert(project=P, region=R, health_check_resource=check))
    gce.finish(gce.groups.insert(project=P, zone=Z, instance_group_resource=c.InstanceGroup(name="g")))
    service = c.BackendService(
        name="api",
        protocol="TCP",
        health_checks=[f"regions/{R}/healthChecks/hc"],
        backends=[c.Backend(group=f"zones/{Z}/instanceGroups/g")],
    )
    with pytest.raises(exceptions.BadRequest, match="balancingMode"):
        gce.backend_services.insert(project=P, region=R, backend_service_resource=service)


def test_legacy_http_health_checks_over_raw_rest(gce: Gce, fake: FakeCompute) -> None:
    gce.finish(gce.raw("POST", gce.legacy_health_checks(), {"name": "api", "requestPath": "/healthz", "port": 80}))
    got = gce.session.get(gce.legacy_health_checks("/api")).json()
    assert (got["kind"], got["port"], got["requestPath"], got["checkIntervalSec"]) == (
        "compute#httpHealthCheck",
        80,
        "/healthz",
        5,
    )
    assert [i["name"] for i in gce.session.get(gce.legacy_health_checks()).json()["items"]] == ["api"]
    with pytest.raises(exceptions.BadRequest, match=re.escape("resource.requestPath")):
        gce.raw("POST", gce.legacy_health_checks(), {"name": "other", "requestPath": "healthz"})
    gce.finish(gce.raw("DELETE", gce.legacy_health_checks("/api")))
    with pytest.raises(exceptions.NotFound):
        gce.raw("GET", gce.legacy_health_checks("/api"))


def test_list_instances_of_a_group_is_a_paged_read_not_an_operation(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    for name in ("controller-0", "controller-1", "controller-2"):
        add_vm(gce, name)
    gce.finish(gce.groups.insert(project=P, zone=Z, instance_group_resource=c.InstanceGroup(name="controllers")))
    listing = f"{gce.endpoint}/compute/v1/projects/{P}/zones/{Z}/instanceGroups/controllers/listInstances"
    assert "items" not in gce.session.post(listing, json={}).json()  # empty: items omitted, as GCE does
    join = c.InstanceGroupsAddInstancesRequest(
        instances=[c.InstanceReference(instance=f"zones/{Z}/instances/controller-{n}") for n in (0, 1, 2)]
    )
    gce.finish(
        gce.groups.add_instances(
            project=P, zone=Z, instance_group="controllers", instance_groups_add_instances_request_resource=join
        )
    )
    gce.finish(gce.instances.delete(project=P, zone=Z, instance="controller-1"))
    posts = len([r for r in fake.requests if r.method == "POST"])

    wanted = c.InstanceGroupsListInstancesRequest(instance_state="RUNNING")
    request = c.ListInstancesInstanceGroupsRequest(
        project=P, zone=Z, instance_group="controllers", max_results=1,
        instance_groups_list_instances_request_resource=wanted,
    )
    listed = list(gce.groups.list_instances(request=request))

    assert [(i.instance, i.status) for i in listed] == [
        (f"https://www.googleapis.com/compute/v1/projects/{P}/zones/{Z}/instances/controller-{n}", "RUNNING")
        for n in (0, 2)
    ]
    sent = [r for r in fake.requests if r.method == "POST"][posts:]
    assert [(r.path.rsplit("/", 1)[1], r.body, r.query.get("pageToken"), "requestId" in r.query) for r in sent] == [
        ("listInstances", {"instanceState": "RUNNING"}, None, False),
        ("listInstances", {"instanceState": "RUNNING"}, "1", False),
    ]
    assert fake.group_members(f"zones/{Z}/instanceGroups/controllers")[1]["name"] == "controller-2"
    with pytest.raises(exceptions.BadRequest, match=re.escape("request.instanceState")):
        gce.raw("POST", listing, {"instanceState": "STOPPED"})
    with pytest.raises(exceptions.NotFound, match="instanceGroups/workers"):
        list(gce.groups.list_instances(project=P, zone=Z, instance_group="workers"))


# -- GCE's rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Net", "net_1", "1net", "net-", "n" * 64])
def test_names_must_be_rfc1035_and_at_most_63_characters(gce: Gce, name: str) -> None:
    with pytest.raises(exceptions.BadRequest, match=re.escape("resource.name")) as caught:
        gce.networks.insert(project=P, network_resource=c.Network(name=name, auto_create_subnetworks=False))
    assert reason(caught.value) == "invalid"


def test_a_63_character_name_is_accepted(gce: Gce) -> None:
    gce.finish(gce.networks.insert(project=P, network_resource=c.Network(name="n" * 63, auto_create_subnetworks=False)))
    assert gce.networks.get(project=P, network="n" * 63).name == "n" * 63


def test_required_fields_are_named(gce: Gce) -> None:
    build_network(gce)
    no_machine = vm("worker-0")
    no_machine.machine_type = ""
    with pytest.raises(exceptions.BadRequest, match=re.escape("Required field 'resource.machineType'")):
        gce.instances.insert(project=P, zone=Z, instance_resource=no_machine)
    no_image = vm("worker-0", image="")
    with pytest.raises(exceptions.BadRequest, match=re.escape("initializeParams.sourceImage")):
        gce.instances.insert(project=P, zone=Z, instance_resource=no_image)
    with pytest.raises(exceptions.BadRequest, match=re.escape("resource.ipCidrRange")):
        gce.subnetworks.insert(
            project=P, region=R, subnetwork_resource=c.Subnetwork(name="s2", network="global/networks/net")
        )


def test_a_second_resource_of_the_same_name_conflicts(gce: Gce) -> None:
    build_network(gce)
    with pytest.raises(exceptions.Conflict, match=f"projects/{P}/global/networks/net' already exists") as caught:
        gce.networks.insert(project=P, network_resource=c.Network(name="net", auto_create_subnetworks=False))
    assert reason(caught.value) == "alreadyExists"


def test_references_are_checked(gce: Gce) -> None:
    missing_net = c.Subnetwork(name="s", ip_cidr_range="10.0.0.0/24", network="global/networks/nowhere")
    with pytest.raises(exceptions.NotFound, match=f"projects/{P}/global/networks/nowhere"):
        gce.subnetworks.insert(project=P, region=R, subnetwork_resource=missing_net)
    build_network(gce)
    with pytest.raises(exceptions.BadRequest, match="Machine type with name 'e9-huge'"):
        gce.instances.insert(project=P, zone=Z, instance_resource=vm("a", machine="e9-huge"))
    with pytest.raises(exceptions.NotFound, match="images/family/debian-7"):
        gce.instances.insert(
            project=P, zone=Z, instance_resource=vm("a", image="projects/debian-cloud/global/images/family/debian-7")
        )
    overlap = c.Subnetwork(name="s", ip_cidr_range="10.240.0.128/25", network="global/networks/net")
    with pytest.raises(exceptions.BadRequest, match="conflicts with existing subnetwork 'subnet'"):
        gce.subnetworks.insert(project=P, region=R, subnetwork_resource=overlap)
    stray_hop = c.Route(name="r", network="global/networks/net", dest_range="10.200.0.0/24", next_hop_ip="192.168.1.1")
    with pytest.raises(exceptions.BadRequest, match=re.escape("resource.nextHopIp")):
        gce.routes.insert(project=P, route_resource=stray_hop)
    to_no_pool = c.ForwardingRule(name="f", port_range="6443", target=f"regions/{R}/targetPools/none")
    with pytest.raises(exceptions.NotFound, match="targetPools/none"):
        gce.rules.insert(project=P, region=R, forwarding_rule_resource=to_no_pool)
    gce.finish(gce.target_pools.insert(project=P, region=R, target_pool_resource=c.TargetPool(name="pool")))
    unreserved = c.ForwardingRule(
        name="f", I_p_address="203.0.113.10", port_range="6443", target=f"regions/{R}/targetPools/pool"
    )
    with pytest.raises(exceptions.BadRequest, match="not reserved"):
        gce.rules.insert(project=P, region=R, forwarding_rule_resource=unreserved)
    new_style_check = c.TargetPool(name="pool2", health_checks=[f"regions/{R}/healthChecks/hc"])
    with pytest.raises(exceptions.BadRequest, match="URL is malformed"):
        gce.target_pools.insert(project=P, region=R, target_pool_resource=new_style_check)
    join = c.TargetPoolsAddInstanceRequest(instances=[c.InstanceReference(instance=f"zones/{Z}/instances/ghost")])
    with pytest.raises(exceptions.NotFound, match="instances/ghost"):
        gce.target_pools.add_instance(
            project=P, region=R, target_pool="pool", target_pools_add_instance_request_resource=join
        )


def test_a_resource_being_created_is_invisible_and_not_ready(gce: Gce) -> None:
    with FakeCompute(op_latency=1.0) as slow:
        slow_gce = Gce(slow)
        op = slow_gce.networks.insert(project=P, network_resource=c.Network(name="net", auto_create_subnetworks=False))
        with pytest.raises(exceptions.NotFound):
            slow_gce.networks.get(project=P, network="net")
        subnet = c.Subnetwork(name="s", ip_cidr_range="10.0.0.0/24", network="global/networks/net")
        with pytest.raises(exceptions.BadRequest, match="is not ready") as caught:
            slow_gce.subnetworks.insert(project=P, region=R, subnetwork_resource=subnet)
        assert reason(caught.value) == "resourceNotReady"
        with pytest.raises(exceptions.Conflict):
            slow_gce.networks.insert(project=P, network_resource=c.Network(name="net", auto_create_subnetworks=False))
        slow_gce.finish(op)
        assert slow_gce.networks.get(project=P, network="net").name == "net"


def test_deleting_a_resource_in_use_is_refused_until_its_users_are_gone(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    add_vm(gce, "controller-0", auto_delete=False)
    gce.finish(gce.raw("POST", gce.legacy_health_checks(), {"name": "hc"}))
    pool = c.TargetPool(name="pool", health_checks=["global/httpHealthChecks/hc"])
    gce.finish(gce.target_pools.insert(project=P, region=R, target_pool_resource=pool))
    gce.finish(gce.addresses.insert(project=P, region=R, address_resource=c.Address(name="api")))
    rule = c.ForwardingRule(
        name="rule", I_p_address=f"regions/{R}/addresses/api", port_range="6443", target=f"regions/{R}/targetPools/pool"
    )
    gce.finish(gce.rules.insert(project=P, region=R, forwarding_rule_resource=rule))
    refusals = [
        (lambda: gce.networks.delete(project=P, network="net"), "subnetworks/subnet"),
        (lambda: gce.subnetworks.delete(project=P, region=R, subnetwork="subnet"), "instances/controller-0"),
        (lambda: gce.disks.delete(project=P, zone=Z, disk="controller-0"), "instances/controller-0"),
        (lambda: gce.addresses.delete(project=P, region=R, address="api"), "forwardingRules/rule"),
        (lambda: gce.target_pools.delete(project=P, region=R, target_pool="pool"), "forwardingRules/rule"),
        (lambda: gce.raw("DELETE", gce.legacy_health_checks("/hc")), "targetPools/pool"),
    ]
    for delete, user in refusals:
        with pytest.raises(exceptions.BadRequest, match=f"already being used by '.*{user}'") as caught:
            delete()
        assert reason(caught.value) == "resourceInUseByAnotherResource"

    gce.finish(gce.rules.delete(project=P, region=R, forwarding_rule="rule"))
    gce.finish(gce.target_pools.delete(project=P, region=R, target_pool="pool"))
    gce.finish(gce.raw("DELETE", gce.legacy_health_checks("/hc")))
    gce.finish(gce.addresses.delete(project=P, region=R, address="api"))
    gce.finish(gce.instances.delete(project=P, zone=Z, instance="controller-0"))
    gce.finish(gce.disks.delete(project=P, zone=Z, disk="controller-0"))
    gce.finish(gce.subnetworks.delete(project=P, region=R, subnetwork="subnet"))
    gce.finish(gce.networks.delete(project=P, network="net"))
    kinds = (
        "networks",
        "subnetworks",
        "instances",
        "disks",
        "addresses",
        "targetPools",
        "forwardingRules",
        "httpHealthChecks",
    )
    assert all(fake.resources(kind) == [] for kind in kinds)


def test_health_checks_and_groups_in_use_by_a_backend_service_stay(gce: Gce) -> None:
    build_network(gce)
    check = c.HealthCheck(name="hc", type_="TCP", tcp_health_check=c.TCPHealthCheck(port=6443))
    gce.finish(gce.health_checks.insert(project=P, region=R, health_check_resource=check))
    gce.finish(
        gce.groups.insert(
            project=P, zone=Z, instance_group_resource=c.InstanceGroup(name="g", network="global/networks/net")
        )
    )
    add_backend_service(gce, check="hc", group="g")
    for delete in (
        lambda: gce.health_checks.delete(project=P, region=R, health_check="hc"),
        lambda: gce.groups.delete(project=P, zone=Z, instance_group="g"),
    ):
        with pytest.raises(exceptions.BadRequest, match="backendServices/api"):
            delete()
    gce.finish(gce.backend_services.delete(project=P, region=R, backend_service="api"))
    gce.finish(gce.groups.delete(project=P, zone=Z, instance_group="g"))
    gce.finish(gce.health_checks.delete(project=P, region=R, health_check="hc"))


def test_instance_delete_takes_its_auto_delete_boot_disk_only(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    add_vm(gce, "kept", auto_delete=False)
    add_vm(gce, "gone", auto_delete=True)
    for name in ("kept", "gone"):
        gce.finish(gce.instances.delete(project=P, zone=Z, instance=name))
    assert [d["name"] for d in fake.resources("disks")] == ["kept"]
    assert "users" not in fake.resources("disks")[0]


def test_set_metadata_needs_the_current_fingerprint(gce: Gce) -> None:
    build_network(gce)
    node = add_vm(gce, "worker-0")
    stale = c.Metadata(fingerprint="c3RhbGU=", items=[c.Items(key="ssh-keys", value="khwtui:ssh-ed25519 AAAA")])
    with pytest.raises(exceptions.PreconditionFailed):
        gce.instances.set_metadata(project=P, zone=Z, instance="worker-0", metadata_resource=stale)
    current = c.Metadata(fingerprint=node.metadata.fingerprint, items=stale.items)
    gce.finish(gce.instances.set_metadata(project=P, zone=Z, instance="worker-0", metadata_resource=current))
    after = gce.instances.get(project=P, zone=Z, instance="worker-0").metadata
    assert [(i.key, i.value) for i in after.items] == [("ssh-keys", "khwtui:ssh-ed25519 AAAA")]
    assert after.fingerprint != node.metadata.fingerprint


def test_an_enforced_os_login_policy_refuses_enable_oslogin_false_on_insert_and_set_metadata() -> None:
    with FakeCompute(org_policies={"compute.requireOsLogin"}) as fake:
        gce = Gce(fake)
        build_network(gce)
        node = add_vm(gce, "allowed", metadata={"enable-oslogin": "TRUE"})
        for refused in (
            lambda: add_vm(gce, "refused", metadata={"enable-oslogin": "false"}),
            lambda: gce.instances.set_metadata(
                project=P, zone=Z, instance="allowed",
                metadata_resource=c.Metadata(fingerprint=node.metadata.fingerprint, items=[c.Items(key="enable-oslogin", value="FALSE")]),
            ),
        ):
            with pytest.raises(exceptions.PreconditionFailed, match=f"^412 .*Constraint constraints/compute.requireOsLogin violated for project projects/{P}") as caught:
                refused()
            assert reason(caught.value) == "conditionNotMet"
        assert [i["name"] for i in fake.resources("instances")] == ["allowed"]


# -- operations, retries and faults ---------------------------------------------------------------


def test_operations_go_pending_running_done_and_wait_returns_early() -> None:
    with FakeCompute(op_latency=0.6, wait_cap=0.05) as fake:
        gce = Gce(fake)
        op = gce.networks.insert(project=P, network_resource=c.Network(name="net", auto_create_subnetworks=False))
        seen = [op.status]
        deadline = time.monotonic() + 10
        while seen[-1] != DONE and time.monotonic() < deadline:
            seen.append(gce.global_ops.wait(project=P, operation=op.name).status)
        order = [c.Operation.Status.PENDING, c.Operation.Status.RUNNING, DONE]
        assert seen[0] == c.Operation.Status.PENDING and seen[-1] == DONE
        assert c.Operation.Status.RUNNING in seen
        assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
        assert gce.global_ops.get(project=P, operation=op.name).status == DONE
        with pytest.raises(exceptions.NotFound):
            gce.region_ops.get(project=P, region=R, operation=op.name)


def test_an_exceeded_quota_ends_the_operation_in_error() -> None:
    with FakeCompute(quotas={"CPUS": 2}) as fake:
        gce = Gce(fake)
        build_network(gce)
        add_vm(gce, "controller-0")
        op = gce.instances.insert(project=P, zone=Z, instance_resource=vm("controller-1"))
        with pytest.raises(exceptions.Forbidden) as caught:
            gce.finish(op)
        assert caught.value.errors[0].code == "QUOTA_EXCEEDED"
        assert caught.value.errors[0].message == f"Quota 'CPUS' exceeded.  Limit: 2.0 in region {R}."
        assert [i["name"] for i in fake.resources("instances")] == ["controller-0"]
        quotas = {q.metric: (q.limit, q.usage) for q in gce.regions.get(project=P, region=R).quotas}
        assert quotas["CPUS"] == (2.0, 2.0) and quotas["INSTANCES"][1] == 1.0 and quotas["IN_USE_ADDRESSES"][1] == 1.0


def test_an_injected_operation_error_leaves_the_resource_untouched(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    fake.inject_op_error(
        "DELETE", r"/subnetworks/subnet$", "RESOURCE_OPERATION_RATE_EXCEEDED", "Try later.", status=403
    )
    with pytest.raises(exceptions.Forbidden, match="Try later"):
        gce.finish(gce.subnetworks.delete(project=P, region=R, subnetwork="subnet"))
    assert [s["name"] for s in fake.resources("subnetworks")] == ["subnet"]
    gce.finish(gce.subnetworks.delete(project=P, region=R, subnetwork="subnet"))
    assert fake.resources("subnetworks") == []


def test_a_repeated_request_id_gets_the_first_operation(gce: Gce, fake: FakeCompute) -> None:
    request = c.InsertNetworkRequest(
        project=P, request_id=str(uuid.uuid4()), network_resource=c.Network(name="net", auto_create_subnetworks=False)
    )
    first = gce.networks.insert(request=request)
    gce.finish(first)
    again = gce.networks.insert(request=request)
    assert again.name == first.name
    assert len(fake.resources("networks")) == 1
    with pytest.raises(exceptions.Conflict):
        gce.networks.insert(
            request=c.InsertNetworkRequest(
                project=P, request_id=str(uuid.uuid4()), network_resource=request.network_resource
            )
        )
    with pytest.raises(exceptions.BadRequest, match="requestId"):
        gce.networks.insert(
            request=c.InsertNetworkRequest(
                project=P, request_id="not-a-uuid", network_resource=request.network_resource
            )
        )


def test_a_lost_reply_is_carried_out_once_when_retried_with_its_request_id() -> None:
    with FakeCompute(lose_reply_rate=1.0) as fake:
        gce = Gce(fake)
        request = c.InsertNetworkRequest(
            project=P,
            request_id=str(uuid.uuid4()),
            network_resource=c.Network(name="net", auto_create_subnetworks=False),
        )
        for _ in range(2):
            with pytest.raises(exceptions.ServiceUnavailable):
                gce.networks.insert(request=request)
        assert [n["name"] for n in fake.resources("networks")] == ["net"]  # the retry replayed, no 409
        with pytest.raises(exceptions.Conflict):
            gce.networks.insert(project=P, network_resource=request.network_resource)


def test_injected_http_faults_hit_matching_requests_only(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    fake.inject("GET", r"/global/networks/net$", 503, times=2)
    assert gce.networks.get(project=P, network="net").name == "net"  # reads are retried on 503
    statuses = [r.status for r in fake.requests if r.method == "GET" and r.path.endswith("/global/networks/net")]
    assert statuses == [503, 503, 200]
    fake.inject("POST", r"/global/firewalls$", 429)
    firewall = c.Firewall(name="fw", network="global/networks/net", allowed=[c.Allowed(I_p_protocol="icmp")])
    with pytest.raises(exceptions.TooManyRequests):
        gce.firewalls.insert(project=P, firewall_resource=firewall)
    assert fake.resources("firewalls") == []
    gce.finish(gce.firewalls.insert(project=P, firewall_resource=firewall))


def fault_pattern(seed: int, count: int = 200) -> list[int]:
    with FakeCompute(fault_rate=0.25, seed=seed) as fake, requests.Session() as session:
        return [session.get(f"{fake.endpoint}/compute/v1/projects/{P}").status_code for _ in range(count)]


def test_the_fault_rate_is_honoured_and_repeatable_with_a_seed() -> None:
    first, again, other = fault_pattern(7), fault_pattern(7), fault_pattern(8)
    assert first == again != other
    faults = [s for s in first if s != 200]
    assert 30 <= len(faults) <= 70  # 200 draws at 25 %: mean 50, sd 6
    assert set(faults) == {429, 503}


def test_parallel_operations_are_counted_in_flight() -> None:
    with FakeCompute(op_latency=0.5) as fake:
        gce = Gce(fake)
        insert = lambda name: gce.addresses.insert(project=P, region=R, address_resource=c.Address(name=name))  # noqa: E731
        with ThreadPoolExecutor(3) as pool:
            for op in list(pool.map(insert, ["a1", "a2", "a3"])):
                gce.finish(op)
        for name in ("a4", "a5"):
            gce.finish(insert(name))
        assert fake.max_in_flight("addresses.insert") == 3
        assert fake.max_in_flight("instances.insert") == 0


# -- host keys and backing -----------------------------------------------------------------------


def test_guest_attributes_are_404_until_the_host_key_is_published() -> None:
    with FakeCompute(hostkey_delay=0.5) as fake:
        gce = Gce(fake)
        build_network(gce)
        add_vm(gce, "silent", metadata={"enable-oslogin": "FALSE"})
        add_vm(gce, "worker-0")
        query = c.GetGuestAttributesInstanceRequest(project=P, zone=Z, instance="worker-0", query_path="hostkeys/")
        with pytest.raises(
            exceptions.NotFound, match=re.escape("The resource 'hostkeys/' of type 'Guest Attribute' was not found.")
        ):
            gce.instances.get_guest_attributes(request=query)
        deadline, attempts = time.monotonic() + 10, 1
        while True:
            try:
                published = gce.instances.get_guest_attributes(request=query)
                break
            except exceptions.NotFound:
                assert time.monotonic() < deadline
                attempts += 1
                time.sleep(0.05)
        keys = {i.key: i.value for i in published.query_value.items if i.namespace == "hostkeys"}
        private = fake.backing.private_key("worker-0")
        expected = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        assert attempts > 1 and keys == {"ssh-ed25519": expected.decode().split()[1]}
        silent = c.GetGuestAttributesInstanceRequest(project=P, zone=Z, instance="silent", query_path="hostkeys/")
        with pytest.raises(exceptions.NotFound):  # created earlier, but never asked the agent to publish
            gce.instances.get_guest_attributes(request=silent)


class RecordingBacking:
    """Stands in for nspawn nodes: fixed addresses and keys, and a log of calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.lock = threading.Lock()

    def create(self, name: str, network_ip: str) -> tuple[str, dict[str, str]]:
        with self.lock:
            self.calls.append(("create", name, network_ip))
        return f"127.0.9.{len(self.calls)}", {"ssh-ed25519": f"AAAA-{name}"}

    def delete(self, name: str) -> None:
        with self.lock:
            self.calls.append(("delete", name))


def test_a_backing_supplies_the_address_and_host_keys_of_each_instance() -> None:
    backing = RecordingBacking()
    with FakeCompute(backing=backing) as fake:
        gce = Gce(fake)
        build_network(gce)
        node = add_vm(gce, "worker-0", ip="10.240.0.20")
        assert node.network_interfaces[0].access_configs[0].nat_i_p == "127.0.9.1"
        query = c.GetGuestAttributesInstanceRequest(
            project=P, zone=Z, instance="worker-0", variable_key="hostkeys/ssh-ed25519"
        )
        assert gce.instances.get_guest_attributes(request=query).variable_value == "AAAA-worker-0"
        gce.finish(gce.instances.delete(project=P, zone=Z, instance="worker-0"))
        assert backing.calls == [("create", "worker-0", "10.240.0.20"), ("delete", "worker-0")]


def test_a_failing_backing_fails_the_insert_operation() -> None:
    class Broken(RecordingBacking):
        def create(self, name: str, network_ip: str) -> tuple[str, dict[str, str]]:
            raise RuntimeError("node did not boot")

    with FakeCompute(backing=Broken()) as fake:
        gce = Gce(fake)
        build_network(gce)
        with pytest.raises(exceptions.InternalServerError, match="node did not boot"):
            gce.finish(gce.instances.insert(project=P, zone=Z, instance_resource=vm("worker-0")))
        assert fake.resources("instances") == [] and fake.resources("disks") == []


def test_generated_backing_hands_out_distinct_loopback_addresses() -> None:
    allocated = iter(["127.0.0.2", "127.0.0.3"])
    backing = GeneratedBacking(lambda: next(allocated))
    first, second = backing.create("a", "10.240.0.2"), backing.create("b", "10.240.0.3")
    assert (first[0], second[0]) == ("127.0.0.2", "127.0.0.3")
    assert first[1] != second[1]


# -- listing, labels and preflight reads ----------------------------------------------------------


def label(gce: Gce, address: str, labels: dict[str, str]) -> None:
    """addresses.setLabels with the fingerprint just read."""
    found = gce.addresses.get(project=P, region=R, address=address)
    body = c.RegionSetLabelsRequest(labels=labels, label_fingerprint=found.label_fingerprint)
    gce.finish(gce.addresses.set_labels(project=P, region=R, resource=address, region_set_labels_request_resource=body))


def test_addresses_and_forwarding_rules_keep_no_labels_sent_on_insert_only_those_of_set_labels(gce: Gce) -> None:
    marked = {"khwtui-cluster": "mine"}
    gce.finish(gce.addresses.insert(project=P, region=R, address_resource=c.Address(name="api", labels=marked)))
    found = gce.addresses.get(project=P, region=R, address="api")
    assert dict(found.labels) == {} and found.label_fingerprint
    stale = c.RegionSetLabelsRequest(labels=marked, label_fingerprint=found.label_fingerprint)
    label(gce, "api", marked)
    assert dict(gce.addresses.get(project=P, region=R, address="api").labels) == marked
    with pytest.raises(exceptions.PreconditionFailed, match="fingerprint"):
        gce.addresses.set_labels(project=P, region=R, resource="api", region_set_labels_request_resource=stale)
    build_network(gce)
    gce.finish(gce.target_pools.insert(project=P, region=R, target_pool_resource=c.TargetPool(name="pool")))
    address = gce.addresses.get(project=P, region=R, address="api").address
    rule = c.ForwardingRule(name="rule", I_p_address=address, target=f"regions/{R}/targetPools/pool", port_range="6443", labels=marked)
    gce.finish(gce.rules.insert(project=P, region=R, forwarding_rule_resource=rule))
    found_rule = gce.rules.get(project=P, region=R, forwarding_rule="rule")
    assert dict(found_rule.labels) == {}
    body = c.RegionSetLabelsRequest(labels=marked, label_fingerprint=found_rule.label_fingerprint)
    gce.finish(gce.rules.set_labels(project=P, region=R, resource="rule", region_set_labels_request_resource=body))
    assert dict(gce.rules.get(project=P, region=R, forwarding_rule="rule").labels) == marked


def test_labels_filter_list_and_aggregated_list(gce: Gce, fake: FakeCompute) -> None:
    build_network(gce)
    add_vm(gce, "mine-0", labels={"khwtui-cluster": "mine"})
    add_vm(gce, "mine-1", labels={"khwtui-cluster": "mine"}, zone="us-west1-b")
    add_vm(gce, "theirs", labels={"khwtui-cluster": "theirs"})
    gce.finish(gce.addresses.insert(project=P, region=R, address_resource=c.Address(name="api")))
    label(gce, "api", {"khwtui-cluster": "mine"})
    gce.finish(gce.addresses.insert(project=P, region=R, address_resource=c.Address(name="other")))

    zonal = gce.instances.list(request=c.ListInstancesRequest(project=P, zone=Z, filter="labels.khwtui-cluster=mine"))
    assert [i.name for i in zonal] == ["mine-0"]
    everywhere = gce.instances.aggregated_list(
        request=c.AggregatedListInstancesRequest(project=P, filter='labels.khwtui-cluster = "mine"')
    )
    by_zone = {zone: [i.name for i in scoped.instances] for zone, scoped in everywhere if scoped.instances}
    assert by_zone == {f"zones/{Z}": ["mine-0"], "zones/us-west1-b": ["mine-1"]}
    addresses = gce.addresses.aggregated_list(
        request=c.AggregatedListAddressesRequest(project=P, filter="labels.khwtui-cluster=mine")
    )
    assert [a.name for _, scoped in addresses for a in scoped.addresses] == ["api"]
    named = gce.instances.list(
        request=c.ListInstancesRequest(project=P, zone=Z, filter="(name = theirs) AND (labels.khwtui-cluster != mine)")
    )
    assert [i.name for i in named] == ["theirs"]
    with pytest.raises(exceptions.BadRequest, match="filter"):
        list(gce.instances.list(request=c.ListInstancesRequest(project=P, zone=Z, filter="name = a OR name = b")))
    with pytest.raises(exceptions.BadRequest, match=re.escape("resource.labels")):
        gce.addresses.insert(project=P, region=R, address_resource=c.Address(name="x", labels={"Cluster": "Mine"}))
    assert any(
        r.query.get("filter") == "labels.khwtui-cluster=mine" and "/aggregated/addresses" in r.path
        for r in fake.requests
    )


def test_lists_are_paged(gce: Gce, fake: FakeCompute) -> None:
    for n in range(5):
        gce.finish(
            gce.networks.insert(project=P, network_resource=c.Network(name=f"net-{n}", auto_create_subnetworks=False))
        )
    names = [n.name for n in gce.networks.list(request=c.ListNetworksRequest(project=P, max_results=2))]
    assert names == [f"net-{n}" for n in range(5)]
    assert [
        r.query.get("pageToken") for r in fake.requests if r.method == "GET" and r.path.endswith("/global/networks")
    ] == [None, "2", "4"]


def test_preflight_reads() -> None:
    with FakeCompute(project_metadata={"enable-oslogin": "TRUE"}) as fake:
        gce = Gce(fake)
        metadata = gce.projects.get(project=P).common_instance_metadata
        assert {i.key: i.value for i in metadata.items} == {"enable-oslogin": "TRUE"}
        machine = gce.machine_types.get(project=P, zone=Z, machine_type="e2-standard-2")
        assert (machine.guest_cpus, machine.memory_mb) == (2, 8192)
        with pytest.raises(exceptions.NotFound):
            gce.machine_types.get(project=P, zone=Z, machine_type="e9-huge")
        region = gce.regions.get(project=P, region=R)
        assert {q.metric for q in region.quotas} == {"CPUS", "INSTANCES", "IN_USE_ADDRESSES", "STATIC_ADDRESSES", "DISKS_TOTAL_GB", "SSD_TOTAL_GB"}
        assert [q.metric for q in gce.projects.get(project=P).quotas] == ["CPUS_ALL_REGIONS"]
        assert f"zones/{Z}" in " ".join(region.zones)
        assert gce.images.get_from_family(project="debian-cloud", family="debian-12").family == "debian-12"
        with pytest.raises(exceptions.NotFound, match="images/family/debian-7"):
            gce.images.get_from_family(project="debian-cloud", family="debian-7")
        with pytest.raises(exceptions.NotFound, match="projects/other"):
            gce.networks.list(project="other")
        with pytest.raises(exceptions.BadRequest, match="Unknown zone"):
            gce.instances.get(project=P, zone="mars-north1-a", instance="x")


def test_boot_disks_count_against_the_disk_quota_of_their_type_and_cpus_against_the_projects() -> None:
    with FakeCompute(quotas={"CPUS_ALL_REGIONS": 3}) as fake:
        gce = Gce(fake)
        build_network(gce)
        add_vm(gce, "a")  # e2-standard-2 with a 20 GB pd-standard boot disk
        used = {q.metric: q.usage for q in gce.regions.get(project=P, region=R).quotas}
        assert (used["DISKS_TOTAL_GB"], used["SSD_TOTAL_GB"]) == (20.0, 0.0)
        [cpus] = gce.projects.get(project=P).quotas
        assert (cpus.metric, cpus.usage, cpus.limit) == ("CPUS_ALL_REGIONS", 2.0, 3.0)
        with pytest.raises(exceptions.Forbidden, match=re.escape("Quota 'CPUS_ALL_REGIONS' exceeded.  Limit: 3.0 globally.")):
            add_vm(gce, "b", zone="us-west1-b")


def test_refused_credentials_get_401_which_the_client_answers_by_refreshing_them() -> None:
    with FakeCompute(refuse="credentials") as fake:
        with pytest.raises(GoogleAuthError, match="cannot be refreshed"):  # anonymous ones cannot be
            Gce(fake).projects.get(project=P)
        assert [r.status for r in fake.requests] == [401]


def test_a_disabled_api_gets_403_access_not_configured_with_service_disabled() -> None:
    with FakeCompute(refuse="api-disabled") as fake:
        with pytest.raises(exceptions.Forbidden) as caught:
            Gce(fake).projects.get(project=P)
        assert caught.value.errors[0]["reason"] == "accessNotConfigured"
        assert caught.value.reason == "SERVICE_DISABLED" and "Compute Engine API has not been used" in caught.value.message


def test_op_fail_rate_ends_operations_done_with_an_internal_error_and_no_effect() -> None:
    with FakeCompute(op_fail_rate=0.5, seed=4) as fake:
        gce = Gce(fake)
        outcomes = []
        for i in range(8):
            try:
                gce.finish(gce.networks.insert(project=P, network_resource=c.Network(name=f"n{i}", auto_create_subnetworks=False)))
                outcomes.append("made")
            except exceptions.InternalServerError as failed:
                assert "Internal error. Please try again" in failed.message
                outcomes.append("failed")
        assert {"made", "failed"} == set(outcomes)
        assert len(fake.resources("networks")) == outcomes.count("made")
