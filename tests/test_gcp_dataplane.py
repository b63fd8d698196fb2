"""The fake's load balancers carry real traffic (tests/gcp_dataplane.py): forwarding rules listen
on their loopback address, probe their members with the configured health check, and splice
connections to healthy members only. Members are small real servers on the loopback addresses
the fake's generated backing gave the instances; no nodes."""

from __future__ import annotations

import datetime
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fakegce import FakeCompute
from gcp_dataplane import LoadBalancers
from google.cloud import compute_v1 as c
from test_fakegce import (  # noqa: F401 - `_no_cloud_config` is the autouse guard against a real gcloud setup
    Gce,
    P,
    R,
    Z,
    _no_cloud_config,
    add_backend_service,
    add_vm,
    build_network,
)

NODES = ["controller-0", "controller-1"]


@dataclass
class Machine:
    """A real HTTP(S) server standing behind one instance: the health path answers `health`,
    any other path answers the machine's name (its traffic)."""

    name: str
    health_path: str
    health: int = 200
    checks: list[tuple[str, str]] = field(default_factory=list)  # (path, Host) of each health probe
    served: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a test can hold a spliced connection open

    def do_GET(self) -> None:
        machine: Machine = self.server.machine  # type: ignore[attr-defined]
        if self.path == machine.health_path:
            machine.checks.append((self.path, self.headers["Host"]))
            status, body = machine.health, b"health"
        else:
            machine.served += 1
            status, body = 200, machine.name.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read the Machine."""


@contextmanager
def machines(
    fake: FakeCompute, names: list[str], health_path: str, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[int, dict[str, Machine]]]:
    """Servers on each instance's natIP, all on one free port; yields (port, machines by name)."""
    port, made = 0, {}
    with ExitStack() as stack:
        for name in names:
            server = ThreadingHTTPServer((natip(fake, name), port), _Handler)
            server.daemon_threads = True
            if tls:
                server.socket = tls.wrap_socket(server.socket, server_side=True)
            server.machine = made[name] = Machine(name, health_path)  # type: ignore[attr-defined]
            port = server.server_address[1]
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
        yield port, made


def natip(fake: FakeCompute, name: str) -> str:
    """The address the fake's generated backing gave instance `name`."""
    instance = next(i for i in fake.resources("instances") if i["name"] == name)
    return instance["networkInterfaces"][0]["accessConfigs"][0]["natIP"]


def nodes(gce: Gce) -> None:
    """NODES on network "net", whose firewall admits any TCP (the data plane enforces it)."""
    build_network(gce)
    allow_firewall(gce, "allow-any-tcp", ["0.0.0.0/0"])
    for name in NODES:
        add_vm(gce, name, tags=["controller"])


def allow_firewall(gce: Gce, name: str, sources: list[str], ports: list[str] | None = None, tags: list[str] | None = None) -> None:
    rule = c.Firewall(
        name=name, network="global/networks/net", source_ranges=sources, target_tags=tags or [],
        allowed=[c.Allowed(I_p_protocol="tcp", ports=ports or [])],
    )
    gce.finish(gce.firewalls.insert(project=P, firewall_resource=rule))


def target_pool_rule(gce: Gce, port: int, check: dict | None) -> str:
    """A target pool over NODES (with legacy check `check`, if any) behind rule "api"; its address."""
    if check:
        gce.finish(gce.raw("POST", gce.legacy_health_checks(), {"name": "api-health", **check}))
    pool = c.TargetPool(name="api-pool", health_checks=["global/httpHealthChecks/api-health"] if check else [])
    gce.finish(gce.target_pools.insert(project=P, region=R, target_pool_resource=pool))
    join = c.TargetPoolsAddInstanceRequest(
        instances=[c.InstanceReference(instance=f"zones/{Z}/instances/{n}") for n in NODES]
    )
    gce.finish(
        gce.target_pools.add_instance(
            project=P, region=R, target_pool="api-pool", target_pools_add_instance_request_resource=join
        )
    )
    rule = c.ForwardingRule(
        name="api", I_p_protocol="TCP", port_range=f"{port}-{port}", target=f"regions/{R}/targetPools/api-pool"
    )
    gce.finish(gce.rules.insert(project=P, region=R, forwarding_rule_resource=rule))
    return gce.rules.get(project=P, region=R, forwarding_rule="api").I_p_address


def backend_service_rule(gce: Gce, port: int, check: c.HealthCheck) -> str:
    """A backend service over group "controllers" of NODES, checked by `check`, behind rule "api"."""
    gce.finish(gce.health_checks.insert(project=P, region=R, health_check_resource=check))
    gce.finish(gce.groups.insert(project=P, zone=Z, instance_group_resource=c.InstanceGroup(name="controllers")))
    join = c.InstanceGroupsAddInstancesRequest(
        instances=[c.InstanceReference(instance=f"zones/{Z}/instances/{n}") for n in NODES]
    )
    gce.finish(
        gce.groups.add_instances(
            project=P, zone=Z, instance_group="controllers", instance_groups_add_instances_request_resource=join
        )
    )
    add_backend_service(gce, check=check.name, group="controllers")
    rule = c.ForwardingRule(
        name="api",
        ports=[str(port)],
        backend_service=f"regions/{R}/backendServices/api",
        load_balancing_scheme="EXTERNAL",
    )
    gce.finish(gce.rules.insert(project=P, region=R, forwarding_rule_resource=rule))
    return gce.rules.get(project=P, region=R, forwarding_rule="api").I_p_address


def get(address: str, port: int, tls: ssl.SSLContext | None = None) -> tuple[str, bytes]:
    """GET /who through the balancer: the answering machine's name, and the peer certificate."""
    if tls:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(address, port, timeout=2, context=tls)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=2)
    with closing(conn):
        return who(conn), conn.sock.getpeercert(binary_form=True) if tls else b""


def who(conn: http.client.HTTPConnection) -> str:
    """GET /who on an open connection: the answering machine's name."""
    conn.request("GET", "/who")
    return conn.getresponse().read().decode()


def eventually(holds: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not holds():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def refused(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    with FakeCompute() as running:
        yield running


@pytest.fixture
def gce(fake: FakeCompute) -> Gce:
    nodes(gce := Gce(fake))
    return gce


def test_a_target_pool_rule_splices_connections_round_robin_to_its_healthy_members(gce: Gce, fake: FakeCompute) -> None:
    with machines(fake, NODES, "/healthz") as (port, members), LoadBalancers(fake) as lbs:
        address = target_pool_rule(gce, port, {"port": port, "requestPath": "/healthz"})
        lbs.wait_healthy("api", NODES)
        answers = [get(address, port)[0] for _ in range(4)]
    assert sorted(answers) == sorted(NODES * 2)
    assert [m.served for m in members.values()] == [2, 2]


@pytest.mark.parametrize(
    ("host", "sent"), [("kubernetes.default.svc.cluster.local", "kubernetes.default.svc.cluster.local"), (None, "rule")]
)
def test_the_legacy_check_sends_its_host_header_else_the_rule_address_and_its_path(
    gce: Gce, fake: FakeCompute, host: str | None, sent: str
) -> None:
    with machines(fake, NODES, "/healthz") as (port, members), LoadBalancers(fake) as lbs:
        address = target_pool_rule(
            gce, port, {"port": port, "requestPath": "/healthz", **({"host": host} if host else {})}
        )
        lbs.wait_healthy("api", NODES)
    wanted = address if sent == "rule" else sent
    assert {check for m in members.values() for check in m.checks} == {("/healthz", wanted)}
    assert {(p.url.rsplit(":", 1)[1], p.host, p.outcome) for p in lbs.probes("api")} == {
        (f"{port}/healthz", wanted, "200")
    }


def test_a_member_failing_its_check_gets_no_traffic(gce: Gce, fake: FakeCompute) -> None:
    with machines(fake, NODES, "/healthz") as (port, members), LoadBalancers(fake) as lbs:
        members["controller-1"].health = 503
        address = target_pool_rule(gce, port, {"port": port, "requestPath": "/healthz"})
        lbs.wait_healthy("api", ["controller-0"])
        answers = [get(address, port)[0] for _ in range(3)]
    assert answers == ["controller-0"] * 3 and members["controller-1"].served == 0
    assert {p.outcome for p in lbs.probes("api") if p.instance == "controller-1"} == {"503"}


def test_with_no_healthy_member_a_connection_is_closed_at_once(gce: Gce, fake: FakeCompute) -> None:
    with machines(fake, NODES, "/healthz") as (port, members), LoadBalancers(fake) as lbs:
        for machine in members.values():
            machine.health = 503
        address = target_pool_rule(gce, port, {"port": port, "requestPath": "/healthz"})
        lbs.wait_healthy("api", [])
        with socket.create_connection((address, port), timeout=2) as client:
            assert client.recv(1) == b""
    assert [m.served for m in members.values()] == [0, 0] and all(m.checks for m in members.values())


def test_a_target_pool_without_a_check_counts_every_member_healthy(gce: Gce, fake: FakeCompute) -> None:
    with machines(fake, NODES, "/healthz") as (port, members), LoadBalancers(fake) as lbs:
        address = target_pool_rule(gce, port, None)
        lbs.wait_healthy("api", NODES)
        assert get(address, port)[0] in NODES
    assert [m.checks for m in members.values()] == [[], []]


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, bytes]:
    """A server TLS context with a throwaway self-signed certificate, and that certificate (DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "key.pem").write_bytes(pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return server, cert.public_bytes(serialization.Encoding.DER)


def test_an_https_check_over_a_backend_service_passes_tls_through(gce: Gce, fake: FakeCompute, tmp_path: Path) -> None:
    server_tls, cert = self_signed(tmp_path)
    client_tls = ssl.create_default_context()
    client_tls.check_hostname, client_tls.verify_mode = False, ssl.CERT_NONE
    with machines(fake, NODES, "/readyz", tls=server_tls) as (port, members), LoadBalancers(fake) as lbs:
        check = c.HealthCheck(
            name="api-health", type_="HTTPS", https_health_check=c.HTTPSHealthCheck(port=port, request_path="/readyz")
        )
        address = backend_service_rule(gce, port, check)
        lbs.wait_healthy("api", NODES)
        answers = [get(address, port, client_tls) for _ in range(2)]
        listed = gce.groups.list_instances(project=P, zone=Z, instance_group="controllers")
    assert sorted(name for name, _ in answers) == NODES and {peer for _, peer in answers} == {
        cert
    }  # the member's own certificate
    assert {p.url for p in lbs.probes("api")} == {f"https://{natip(fake, n)}:{port}/readyz" for n in NODES}
    assert [i.instance.rsplit("/", 1)[1] for i in listed] == NODES and {m.checks[0] for m in members.values()} == {
        ("/readyz", address)
    }


def test_a_tcp_check_passes_a_member_that_accepts_and_fails_one_that_refuses(gce: Gce, fake: FakeCompute) -> None:
    with machines(fake, ["controller-0"], "/healthz") as (port, _), LoadBalancers(fake) as lbs:
        check = c.HealthCheck(name="api-health", type_="TCP", tcp_health_check=c.TCPHealthCheck(port=port))
        address = backend_service_rule(gce, port, check)
        lbs.wait_healthy("api", ["controller-0"])
        assert get(address, port)[0] == "controller-0"
    assert {p.outcome.split(":")[0] for p in lbs.probes("api") if p.instance == "controller-1"} == {
        "ConnectionRefusedError"
    }


def test_deleting_the_rule_stops_the_listener_but_lets_open_connections_finish(gce: Gce, fake: FakeCompute) -> None:
    with machines(fake, NODES, "/healthz") as (port, _), LoadBalancers(fake) as lbs:
        address = target_pool_rule(gce, port, None)
        lbs.wait_healthy("api", NODES)
        with closing(http.client.HTTPConnection(address, port, timeout=2)) as open_before:
            first = who(open_before)
            gce.finish(gce.rules.delete(project=P, region=R, forwarding_rule="api"))
            eventually(lambda: refused(address, port))
            assert who(open_before) == first  # the same spliced connection, to the same member
        assert lbs.healthy("api") == []


def test_leaving_closes_spliced_connections(gce: Gce, fake: FakeCompute) -> None:
    with machines(fake, NODES, "/healthz") as (port, _):
        with LoadBalancers(fake) as lbs:
            address = target_pool_rule(gce, port, None)
            lbs.wait_healthy("api", NODES)
            client = http.client.HTTPConnection(address, port, timeout=2)
            assert who(client) in NODES  # spliced, and kept alive by the member
        with closing(client):
            assert client.sock.recv(1) == b""  # closed by the balancer, not the member


# --- the VPC firewall ----------------------------------------------------------------------------


def test_the_members_firewall_decides_on_the_clients_address_the_members_tags_and_the_port(gce: Gce, fake: FakeCompute) -> None:
    gce.finish(gce.firewalls.delete(project=P, firewall="allow-any-tcp"))
    with machines(fake, NODES, "/healthz") as (port, members), LoadBalancers(fake, operator="203.0.113.7") as lbs:
        allow_firewall(gce, "allow-probes", ["35.191.0.0/16"], [str(port)], ["controller"])
        address = target_pool_rule(gce, port, {"port": port, "requestPath": "/healthz"})
        lbs.wait_healthy("api", NODES)  # the checkers' range is admitted
        for sources, ports, tags in ((["198.51.100.0/24"], [str(port)], ["controller"]), (["203.0.113.7/32"], [str(port + 1)], ["controller"]), (["203.0.113.7/32"], [str(port)], ["worker"])):
            allow_firewall(gce, "near-miss", sources, ports, tags)
            with socket.create_connection((address, port), timeout=2) as client:
                assert client.recv(1) == b""  # dropped
            gce.finish(gce.firewalls.delete(project=P, firewall="near-miss"))
        assert [m.served for m in members.values()] == [0, 0]
        assert {(d.source, d.port) for d in lbs.dropped} == {("203.0.113.7", port)}
        allow_firewall(gce, "allow-operator", ["203.0.113.0/24"], [f"{port}-{port}"], ["controller"])
        assert get(address, port)[0] in NODES


def test_probes_no_rule_admits_fail_so_no_member_is_healthy(gce: Gce, fake: FakeCompute) -> None:
    gce.finish(gce.firewalls.delete(project=P, firewall="allow-any-tcp"))
    with machines(fake, NODES, "/healthz") as (port, members), LoadBalancers(fake) as lbs:
        target_pool_rule(gce, port, {"port": port, "requestPath": "/healthz"})
        lbs.wait_healthy("api", [])
        assert {p.outcome for p in lbs.probes("api")} == {f"dropped: no firewall rule admits 35.191.0.1 to tcp:{port}"}
        assert all(not m.checks for m in members.values())
