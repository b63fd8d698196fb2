"""A stand-in engine that replays a recorded or hand-written event stream through the sink.

It yields to the event loop between events (never sleeps), records every call, and can hold
the run open after the last event, like a real stage that is still working, until `release()`
or `cancel()`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from khwtui.core.errors import EXIT_INTERRUPTED, EXIT_OK
from khwtui.core.events import Event, RunFinished, Sink, from_json
from khwtui.tui.contracts import StageInfo

STREAMS = Path(__file__).parent / "streams"

STAGES = [
    StageInfo("compute", "compute", "network, nodes, SSH with pinned host keys"),
    StageInfo("pki", "pki", "CA and every certificate, made once"),
    StageInfo("kubeconfigs", "kubeconfigs", "kubelet, kube-proxy, controller-manager, scheduler, admin"),
    StageInfo("encryption", "encryption", "secrets encryption config with a key made once"),
    StageInfo("etcd", "etcd", "TLS etcd cluster on the controllers, all members at once"),
    StageInfo("control-plane", "control plane", "apiserver, controller-manager, scheduler"),
    StageInfo("rbac", "rbac", "apiserver-to-kubelet ClusterRole and binding"),
    StageInfo("frontend", "frontend", "the load balancer in front of the apiservers"),
    StageInfo("workers", "workers", "containerd, runc, CNI, kubelet, kube-proxy"),
    StageInfo("admin-access", "admin access", "your admin kubeconfig through the load balancer"),
    StageInfo("routes", "routes", "pod CIDR routes between the workers"),
    StageInfo("dns", "dns", "CoreDNS with forward, kube-dns service"),
    StageInfo("smoke", "smoke test", "encryption at rest, deployment, port-forward, logs, exec, NodePort"),
]


def load_stream(name: str) -> list[Event]:
    """The events of tests/tui/streams/<name>.jsonl."""
    return [from_json(line) for line in (STREAMS / f"{name}.jsonl").read_text().splitlines() if line.strip()]


@dataclass
class RunCall:
    only: list[str] | None
    start: str | None
    until: str | None


@dataclass
class FakeEngine:
    events: list[Event]
    hold: bool = False  # keep running after the last event until released or cancelled
    pace: float = 0.0  # seconds between events; 0 only yields (the dev script slows it down to watch)
    error: Exception | None = None  # raised after the last event, as an engine bug or bad slice would
    stages: list[StageInfo] = field(default_factory=lambda: list(STAGES))
    calls: list[RunCall] = field(default_factory=list)
    cancels: int = 0

    def __post_init__(self) -> None:
        self.replayed = asyncio.Event()  # every event went through the sink
        self._stop = asyncio.Event()

    async def run(self, sink: Sink, *, only: list[str] | None = None, start: str | None = None, until: str | None = None) -> int:
        self.calls.append(RunCall(only, start, until))
        code = EXIT_OK
        for event in self.events:
            if self._stop.is_set():
                break
            sink(event)
            if isinstance(event, RunFinished):
                code = event.exit_code
            await asyncio.sleep(self.pace)  # yield to the app between events, as a real engine awaits I/O
        self.replayed.set()
        if self.error is not None:
            raise self.error
        if self.hold:
            await self._stop.wait()
        if self.cancels:
            sink(RunFinished(EXIT_INTERRUPTED, "interrupted; run again to resume"))
            return EXIT_INTERRUPTED
        return code

    def release(self) -> None:
        self._stop.set()

    def cancel(self) -> None:
        self.cancels += 1
        self._stop.set()
