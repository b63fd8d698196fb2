"""Stand-ins for the app's services: a probe that replays rounds, a provider-like teardown, and
certificates made by the real Pki at a fixed time.

Each records how it was called (calls, rounds in flight, teardowns) so tests can assert counts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from khwtui.artifacts.pki import CertRow, Pki
from khwtui.core.events import HealthChanged
from khwtui.model import config as config_module
from khwtui.model.config import Config
from khwtui.model.topology import Topology
from khwtui.providers.base import PlannedResource

from .fake_engine import load_stream
from .support import T0, gcp_topology


def health_round(stream: str = "gcp_healthy") -> list[HealthChanged]:
    """The HealthChanged events of a stream: one probe round."""
    return [e for e in load_stream(stream) if isinstance(e, HealthChanged)]


def build_events(stream: str = "gcp_healthy") -> list:
    """A stream without its health events: what a saved cluster replays as."""
    return [e for e in load_stream(stream) if not isinstance(e, HealthChanged)]


@dataclass
class FakeHealth:
    """Each call is one round: the next of `rounds` (the last one repeats). With `hold`, a round
    waits for `release()`, so a test can tick while it is still in flight."""

    rounds: list[list[HealthChanged]]
    hold: bool = False
    calls: int = 0
    in_flight: int = 0
    most_in_flight: int = 0

    def __post_init__(self) -> None:
        self._release = asyncio.Event()

    async def __call__(self) -> list[HealthChanged]:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hold:
                await self._release.wait()
                self._release.clear()
            return list(self.rounds[min(self.calls, len(self.rounds)) - 1])
        finally:
            self.in_flight -= 1

    def release(self) -> None:
        self._release.set()


def gcp_teardown_plan(topo: Topology | None = None) -> list[PlannedResource]:
    """What a gcp teardown of the 2+2 default cluster would list, in deletion order (hand-written)."""
    topo = topo or gcp_topology()
    names = topo.names
    plan = [
        PlannedResource("forwarding rule", names.forwarding_rule, "34.83.1.2:6443"),
        PlannedResource("target pool", names.target_pool, "us-west1"),
        PlannedResource("http health check", names.http_health_check, "/healthz"),
        PlannedResource("firewall", names.allow_smoke, "tcp:31080"),
        PlannedResource("firewall", names.allow_health_check, "130.211.0.0/22, 35.191.0.0/16"),
        PlannedResource("firewall", names.allow_external, "tcp:22,6443 icmp from 0.0.0.0/0"),
        PlannedResource("firewall", names.allow_internal, "tcp, udp, icmp within the cluster"),
    ]
    plan += [PlannedResource("route", name, f"pod CIDR of {node}") for node, name in topo.route_names().items()]
    plan += [PlannedResource("instance", n.name, f"e2-standard-2 · us-west1-c · {n.internal_ip}") for n in topo.nodes]
    plan += [
        PlannedResource("address", names.address, "34.83.1.2"),
        PlannedResource("subnet", names.subnet, "10.240.0.0/24"),
        PlannedResource("network", names.network, ""),
    ]
    return plan


@dataclass
class FakeTeardown:
    """Provider-like: `teardown_plan()` and `teardown(log)`, which logs one line per resource."""

    plan: list[PlannedResource] = field(default_factory=gcp_teardown_plan)
    error: Exception | None = None  # raised after half the plan, as a failing API call would
    hold: bool = False  # wait for release() after the first line, like a long delete
    plans: int = 0
    teardowns: int = 0

    def __post_init__(self) -> None:
        self._release = asyncio.Event()

    def teardown_plan(self) -> list[PlannedResource]:
        self.plans += 1
        return list(self.plan)

    async def teardown(self, log: Callable[[str], None]) -> None:
        self.teardowns += 1
        for i, resource in enumerate(self.plan):
            if self.error is not None and i == len(self.plan) // 2:
                raise self.error
            log(f"deleting {resource.kind} {resource.name}")
            await asyncio.sleep(0)
            if self.hold and i == 0:
                await self._release.wait()
            log(f"deleted {resource.kind} {resource.name}")

    def release(self) -> None:
        self._release.set()


PKI_VIEWED = dt.datetime.fromtimestamp(T0, dt.UTC)
PKI_MADE = PKI_VIEWED - dt.timedelta(days=340)  # 25 days left of 365: due for renewal (30)
PKI_REMADE = PKI_VIEWED - dt.timedelta(days=5)
AGED = ("worker-1", "kube-proxy")


def pki_config(renew_before_days: int = 30) -> Config:
    """The default gcp cluster with quick ECDSA keys (RSA adds seconds and shows nothing more)."""
    return config_module.from_dict(
        {
            "gcp": {"project": "khw-demo-1234", "region": "us-west1", "zone": "us-west1-c"},
            "pki": {"key_type": "ecdsa-p256", "renew_before_days": renew_before_days},
        }
    )


def aged_pki(pki_dir: Path, topo: Topology) -> Pki:
    """Certificates as a real Pki makes them, at fixed times: every leaf but the AGED ones made
    again 5 days before T0, so seen at T0 those two are due for renewal and the rest are fine."""
    Pki(pki_dir, pki_config()).ensure(topo, now=PKI_MADE)
    for path in pki_dir.glob("*.pem"):
        name = path.name.removesuffix("-key.pem").removesuffix(".pem")
        if name not in ("ca", *AGED):
            path.unlink()
    Pki(pki_dir, pki_config(renew_before_days=1)).ensure(topo, now=PKI_REMADE)  # keeps the aged ones
    return Pki(pki_dir, pki_config())


def cert_rows(pki: Pki, topo: Topology) -> list[CertRow]:
    return pki.rows(topo, now=PKI_VIEWED)
