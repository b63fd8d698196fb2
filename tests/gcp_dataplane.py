"""A data plane for the Compute fake's load balancers: each forwarding rule becomes a real listener.

The fake only stores load-balancer resources; this carries their traffic, so a test can see that
what was built would balance: the rule's address and port, the members of its target pool or
backend service, and the health check that decides which member gets traffic.

Like GCE's passthrough network load balancer it splices bytes (TLS is never terminated) to the
member on the port the client used, keeping the client's address: so the member's firewall
rules decide, as GCE's VPC firewall does (admits()), on the client's address, the member's
tags, the protocol and the port; a connection they do not admit is dropped (`dropped`).
Health probes come from GCE's checker range (PROBE_SOURCE) and pass the same rules.

Where a connection comes from: the rule listens on its address on this machine, where the
operator's connections arrive (attributed to `operator`), and, given `netns`, also inside each
instance's own network namespace (an nspawn node's), on the same loopback address and port:
a connection there comes from that instance, attributed to its external address (natIP), as
GCE sees a VM reach a load balancer's external address. Nothing leaves 127.0.0.0/8 and the
test's own namespaces. Two differences from GCE, on purpose:
- STRICTER than GCE: with no healthy member GCE spreads traffic over all members; here the
  connection is closed at once, so a wrong health check fails a test instead of being masked.
- A member's health is its latest probe, taken every `interval` (GCE counts healthyThreshold
  and unhealthyThreshold probes in a row, checkIntervalSec apart), to keep tests fast.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TypeVar

from fakegce import FakeCompute
from fakegce.errors import ApiError

TIMEOUT = 2.0  # seconds for one probe, or for connecting to a member
OPERATOR = "203.0.113.7"  # the address this machine's (the operator's) connections come from
PROBE_SOURCE = "35.191.0.1"  # in 35.191.0.0/16, where GCE's health checks come from
CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_DETAILS = {"HTTP": "httpHealthCheck", "HTTPS": "httpsHealthCheck", "TCP": "tcpHealthCheck"}


@dataclass(frozen=True)
class Probe:
    """One health probe of one member: what was asked and what came back."""

    instance: str
    url: str  # http(s)://address:port/path, tcp://address:port, or "" without a check
    host: str  # the Host header sent ("" for TCP or without a check)
    outcome: str  # the HTTP status ("200"), "connected", "no health check", or the error
    healthy: bool


@dataclass(frozen=True)
class Member:
    name: str
    address: str  # natIP (what the backing reported for the machine), else networkIP
    network: str = ""  # the URL of its interface's network
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Drop:
    """A connection the member's firewall rules did not admit."""

    rule: str  # the forwarding rule it came through
    source: str
    member: str
    port: int


@dataclass(frozen=True)
class Check:
    """How members are probed, from a legacy or regional health check; NONE: always healthy."""

    type: str
    port: int = 0
    path: str = "/"
    host: str = ""


@dataclass(frozen=True)
class Spec:
    """A forwarding rule as the data plane needs it."""

    address: str
    ports: tuple[int, ...]
    members: tuple[Member, ...]
    check: Check


@dataclass
class Balancer:
    """One forwarding rule made real: its listeners and what its probes found."""

    spec: Spec
    servers: list[asyncio.Server] = field(default_factory=list)
    inside: set[str] = field(default_factory=set)  # instances in whose namespace it listens too
    healthy: tuple[Member, ...] = ()
    probes: deque[Probe] = field(default_factory=lambda: deque(maxlen=100))
    turn: int = 0
    rounds: int = 0  # probe rounds finished since the listeners opened

    def next_member(self) -> Member | None:
        """Round robin over the healthy members."""
        if not self.healthy:
            return None
        self.turn += 1
        return self.healthy[self.turn % len(self.healthy)]


class LoadBalancers:
    """Makes the fake's EXTERNAL forwarding rules carry traffic, from one asyncio thread."""

    def __init__(
        self, fake: FakeCompute, interval: float = 0.2, operator: str = OPERATOR, netns: Callable[[], dict[str, str]] | None = None
    ) -> None:
        """`netns` gives the network namespace (a path) of each instance that has one, by name."""
        self._fake = fake
        self._interval = interval
        self._operator = operator
        self._netns = netns or dict
        self.dropped: list[Drop] = []
        self._balancers: dict[str, Balancer] = {}
        self._changed = threading.Condition()  # guards _balancers; notified after each probe round
        self._splices: set[asyncio.Task] = set()
        self.problems: list[str] = []  # listeners that could not bind, errors of the loop itself
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()  # bound to the loop on first use, in its thread
        self._thread = threading.Thread(target=lambda: self._loop.run_until_complete(self._main()), daemon=True)

    def __enter__(self) -> LoadBalancers:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self._loop.close()

    def healthy(self, rule: str) -> list[str]:
        """The names of the rule's members that passed their latest probe."""
        with self._changed:
            balancer = self._balancers.get(rule)
            return sorted(m.name for m in balancer.healthy) if balancer else []

    def probes(self, rule: str) -> list[Probe]:
        """The rule's recent probes, oldest first."""
        with self._changed:
            balancer = self._balancers.get(rule)
            return list(balancer.probes) if balancer else []

    def wait_healthy(self, rule: str, names: Iterable[str], timeout: float = 5.0) -> None:
        """Wait until the rule listens, its members were probed, and exactly `names` passed
        (so `names=[]` waits for a round in which every member failed)."""
        wanted = sorted(names)

        def settled() -> bool:
            balancer = self._balancers.get(rule)
            return bool(balancer and balancer.rounds) and self.healthy(rule) == wanted

        with self._changed:
            if not self._changed.wait_for(settled, timeout):
                recent = self.probes(rule)[-6:]
                raise AssertionError(f"{rule}: healthy {self.healthy(rule)}, wanted {wanted}; {self.problems} {recent}")

    async def _main(self) -> None:
        workers = [asyncio.create_task(self._watch()), asyncio.create_task(self._probe_forever())]
        await self._stop.wait()
        for balancer in self._balancers.values():  # kept: a test may read the probes afterwards
            self._close(balancer)
        for task in [*workers, *self._splices]:
            task.cancel()
        await asyncio.gather(*workers, *self._splices, return_exceptions=True)

    async def _watch(self) -> None:
        """Follow the fake's resources: open listeners for new rules, close those of gone ones."""
        while True:
            try:
                await self._apply(read_specs(self._fake))
            except (ApiError, KeyError):
                pass  # a resource went away between two reads: the next round sees a settled state
            except Exception as bug:  # noqa: BLE001 - a bug here must not stop the data plane silently
                if repr(bug) not in self.problems:
                    self.problems.append(repr(bug))
            await asyncio.sleep(self._interval)

    async def _apply(self, specs: dict[str, Spec]) -> None:
        for name, balancer in list(self._balancers.items()):
            spec = specs.get(name)
            if spec is None or (spec.address, spec.ports) != (balancer.spec.address, balancer.spec.ports):
                with self._changed:
                    del self._balancers[name]
                self._close(balancer)
            else:
                balancer.spec = spec
        for name, spec in specs.items():
            if name not in self._balancers:
                balancer = Balancer(spec)
                for port in spec.ports:
                    try:
                        balancer.servers.append(
                            await asyncio.start_server(partial(self._splice, name, balancer, self._operator, False), spec.address, port)
                        )
                    except OSError as error:
                        self.problems.append(f"{name}: cannot listen on {spec.address}:{port}: {error}")
                with self._changed:
                    self._balancers[name] = balancer
        await self._listen_inside(specs)

    async def _listen_inside(self, specs: dict[str, Spec]) -> None:
        """Listen in each instance's namespace too (once each), attributing its connections to
        its external address; not in a member's: GCE hands a backend's traffic to its own load
        balancer's address back to that backend (which serves the port itself)."""
        addresses = {i["name"]: _member(i).address for i in self._fake.resources("instances")}
        for instance, netns in self._netns().items():
            for name, balancer in self._balancers.items():
                members = {m.name for m in balancer.spec.members}
                if instance in balancer.inside or instance in members or instance not in addresses or name not in specs:
                    continue
                balancer.inside.add(instance)
                for port in balancer.spec.ports:
                    try:
                        sock = run_in_netns(netns, partial(_listening, balancer.spec.address, port))
                        handler = partial(self._splice, name, balancer, addresses[instance], True)
                        balancer.servers.append(await asyncio.start_server(handler, sock=sock))
                    except OSError as error:
                        self.problems.append(f"{name}: cannot listen in {instance}'s namespace on {balancer.spec.address}:{port}: {error}")

    @staticmethod
    def _close(balancer: Balancer) -> None:
        """Stop listening; connections already spliced may finish."""
        for server in balancer.servers:
            server.close()

    def _subnets(self, network: str) -> tuple[ipaddress.IPv4Network, ...]:
        return tuple(ipaddress.IPv4Network(s["ipCidrRange"]) for s in self._fake.resources("subnetworks") if s["network"] == network)

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._probe_rule(b) for b in list(self._balancers.values())))
            with self._changed:
                self._changed.notify_all()
            await asyncio.sleep(self._interval)

    async def _probe_rule(self, balancer: Balancer) -> None:
        spec = balancer.spec
        rules = self._fake.resources("firewalls")
        probes = await asyncio.gather(*(probe(m, spec.check, rules) for m in spec.members))
        with self._changed:
            balancer.probes.extend(probes)
            balancer.healthy = tuple(m for m, p in zip(spec.members, probes, strict=True) if p.healthy)
            balancer.rounds += 1

    async def _splice(
        self, rule: str, balancer: Balancer, source: str, from_instance: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Pass one client connection (from `source`; `from_instance`: an instance's external
        address) through to a healthy member, on the port it came in on, if the member's
        firewall rules admit it; else drop it."""
        task = asyncio.current_task()
        assert task
        self._splices.add(task)
        member, upstream = balancer.next_member(), None
        port = writer.get_extra_info("sockname")[1]
        try:
            internal = self._subnets(member.network) if member and from_instance else ()
            if member and not admits(self._fake.resources("firewalls"), member, source, "tcp", port, internal):
                with self._changed:
                    self.dropped.append(Drop(rule, source, member.name, port))
            elif member:
                upstream = await asyncio.wait_for(asyncio.open_connection(member.address, port), TIMEOUT)
                await asyncio.gather(pipe(reader, upstream[1]), pipe(upstream[0], writer))
        except (OSError, asyncio.CancelledError):
            pass  # the member refused or timed out, or we are stopping: the client sees the connection close
        finally:
            self._splices.discard(task)
            for end in (writer, upstream[1] if upstream else None):
                if end:
                    end.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF and pass the half-close on; on an error, close the far end,
    which ends the other direction too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except OSError:
        writer.close()


async def probe(member: Member, check: Check, firewalls: list[dict]) -> Probe:
    """Probe one member as GCE's checkers do (HTTPS: no certificate verification), from
    PROBE_SOURCE: a probe the member's firewall rules do not admit fails."""
    if check.type == "NONE":
        return Probe(member.name, "", "", "no health check", True)
    if check.type not in _DETAILS:
        return Probe(member.name, "", "", f"fakegce's data plane cannot probe {check.type}", False)
    path = "" if check.type == "TCP" else check.path
    url, host = f"{check.type.lower()}://{member.address}:{check.port}{path}", check.host if path else ""
    if not admits(firewalls, member, PROBE_SOURCE, "tcp", check.port):
        return Probe(member.name, url, host, f"dropped: no firewall rule admits {PROBE_SOURCE} to tcp:{check.port}", False)
    try:
        outcome = await asyncio.wait_for(ask(member.address, check), TIMEOUT)
    except OSError as error:  # refused, reset, TLS failure, timeout
        outcome = f"{type(error).__name__}: {error}"
    return Probe(member.name, url, host, outcome, outcome in ("200", "connected"))


async def ask(address: str, check: Check) -> str:
    """The HTTP status the member answers the check's request with, or "connected" for TCP."""
    tls = None
    if check.type == "HTTPS":
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(address, check.port, ssl=tls)
    try:
        if check.type == "TCP":
            return "connected"
        request = (
            f"GET {check.path} HTTP/1.1\r\nHost: {check.host}\r\nUser-Agent: GoogleHC/1.0\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        status = (await reader.readline()).split()
        return status[1].decode() if len(status) > 1 else "no HTTP status line"
    finally:
        writer.close()


def admits(
    firewalls: list[dict], member: Member, source: str, protocol: str, port: int, internal: tuple[ipaddress.IPv4Network, ...] = ()
) -> bool:
    """Whether the VPC firewall lets a connection from `source` reach `member` on protocol/port:
    of the enabled INGRESS rules of the member's network that apply to it (no targetTags, or one
    of its tags) and match the source (sourceRanges; sourceTags match only traffic from the
    network's own internal addresses, never a connection through an external address) and the
    protocol and port, the one of lowest priority number decides, a deny winning a tie; none
    matching: the implied deny-all ingress rule (https://cloud.google.com/firewall/docs/firewalls:
    "Implied rules", "Priority", "Sources for ingress rules", "Targets").

    `internal`: the network's subnet ranges, when `source` is an instance's external address. In
    GCE that address lies outside every subnet; in this bed an instance's natIP is its networkIP,
    so a range of the network's own internal addresses (one within a subnet, wider than /32)
    must not match it: only a range reaching beyond the subnets, or the address alone, does."""
    matching = [
        rule
        for rule in firewalls
        if rule.get("direction", "INGRESS") == "INGRESS"
        and not rule.get("disabled")
        and rule["network"] == member.network
        and (not rule.get("targetTags") or set(rule["targetTags"]) & set(member.tags))
        and any(_source_in(ipaddress.IPv4Network(r, strict=False), source, internal) for r in rule.get("sourceRanges", ()))
        and any(_covers(entry, protocol, port) for entry in rule.get("allowed") or rule.get("denied") or ())
    ]
    if not matching:
        return False
    first = min(rule.get("priority", 1000) for rule in matching)
    return not any(rule.get("denied") for rule in matching if rule.get("priority", 1000) == first)


def _source_in(sources: ipaddress.IPv4Network, source: str, internal: tuple[ipaddress.IPv4Network, ...]) -> bool:
    if ipaddress.IPv4Address(source) not in sources:
        return False
    return sources.prefixlen == 32 or not any(sources.subnet_of(subnet) for subnet in internal)


def _covers(entry: dict, protocol: str, port: int) -> bool:
    """Whether an allowed/denied entry ({"IPProtocol", "ports"}) covers protocol and port."""
    if entry["IPProtocol"] not in (protocol, "all"):
        return False
    ranges = [p.partition("-") for p in entry.get("ports") or ()]
    return not ranges or any(int(low) <= port <= int(high or low) for low, _, high in ranges)


def run_in_netns(netns: str, work: Callable[[], T]) -> T:
    """`work()` run by a thread that first enters the network namespace at path `netns` (sockets
    it makes stay in that namespace); the caller's own namespace is left alone."""
    outcome: list = []

    def entered() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if _LIBC.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({netns}): {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)
            outcome.append(work())
        except Exception as error:  # noqa: BLE001 - handed back to the caller's thread
            outcome.append(error)

    thread = threading.Thread(target=entered, name="in-netns")
    thread.start()
    thread.join()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


_LIBC = ctypes.CDLL(None, use_errno=True)


def _listening(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def read_specs(fake: FakeCompute) -> dict[str, Spec]:
    """Every EXTERNAL forwarding rule with its members and health check, by rule name."""
    instances = _by_link(fake, "instances")
    pools, services = _by_link(fake, "targetPools"), _by_link(fake, "backendServices")
    specs: dict[str, Spec] = {}
    for rule in (r for r in fake.resources("forwardingRules") if r["loadBalancingScheme"] == "EXTERNAL"):
        address = rule["IPAddress"]
        if rule.get("target"):
            pool = pools[rule["target"]]
            members = [instances[link] for link in pool["instances"]]
            legacy = _by_link(fake, "httpHealthChecks")
            check = _legacy_check(legacy[pool["healthChecks"][0]], address) if pool["healthChecks"] else Check("NONE")
        else:
            service = services[rule["backendService"]]
            members = [m for backend in service["backends"] for m in fake.group_members(backend["group"])]
            check = _regional_check(_by_link(fake, "healthChecks")[service["healthChecks"][0]], address)
        running = tuple(_member(i) for i in members if i["status"] == "RUNNING")
        specs[rule["name"]] = Spec(address, _ports(rule), running, check)
    return specs


def _by_link(fake: FakeCompute, collection: str) -> dict[str, dict]:
    return {r["selfLink"]: r for r in fake.resources(collection)}


def _member(instance: dict) -> Member:
    nic = instance["networkInterfaces"][0]
    nat = (nic.get("accessConfigs") or [{}])[0].get("natIP")
    return Member(instance["name"], nat or nic["networkIP"], nic["network"], tuple(instance.get("tags", {}).get("items", ())))


def _legacy_check(check: dict, rule_address: str) -> Check:
    """A legacy HTTP check; without `host`, GCE sends the rule's address as the Host header."""
    return Check("HTTP", check["port"], check["requestPath"], check.get("host") or rule_address)


def _regional_check(check: dict, rule_address: str) -> Check:
    detail = check.get(_DETAILS.get(check["type"], ""), {})
    return Check(
        check["type"], detail.get("port", 0), detail.get("requestPath", "/"), detail.get("host") or rule_address
    )


def _ports(rule: dict) -> tuple[int, ...]:
    """The ports of `ports` or `portRange` ("6443" or "6443-6443"); none for an all-ports rule."""
    ports: list[int] = []
    for entry in rule.get("ports") or ([rule["portRange"]] if rule.get("portRange") else []):
        low, _, high = entry.partition("-")
        ports += range(int(low), int(high or low) + 1)
    return tuple(ports)
