"""The compute stage's wall time against the critical path of its operations, on the Compute fake.

For each size (2+2 and 3+3 by default) a fresh FakeCompute with 2 s operations and host keys
published 30 s after an instance's insert is DONE; GcpProvider.ensure() (what `khwtui up --only
compute` runs) is timed, and the critical path is read back from the fake's operation log: the
longest chain of operations along compute's dependency graph

    network -> subnet -> instance -> host keys published -> node API rule
    network -> firewalls        address

The ratio wall / critical path is what khwtui adds on top of GCE's own waiting (goal: <= 1.2).
No root needed, nothing leaves 127.0.0.1:

    python3 benchmarks/bench_compute.py [--sizes 2+2,3+3] [--op-seconds 2] [--hostkey-delay 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import asyncssh
import cli_timing  # first: puts tests/ on the import path  # noqa: F401
from fakegce import FakeCompute
from fakegce.operations import OpSpan

from khwtui.model import config as config_mod
from khwtui.model.topology import Topology
from khwtui.providers.gcp import GcpProvider

CLIENT_KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def critical_path(spans: list[OpSpan], hostkey_delay: float, node_api_rule: str) -> float:
    """Seconds along the longest chain of compute's dependency graph, from the operations as run."""

    def took(kind: str, exclude: str = "") -> float:
        return max((s.ended - s.started for s in spans if s.kind == kind and s.target != exclude), default=0.0)

    rule = max((s.ended - s.started for s in spans if s.target == node_api_rule), default=0.0)
    network = took("networks.insert")
    nodes = network + took("subnetworks.insert") + took("instances.insert") + hostkey_delay + rule
    return max(nodes, network + took("firewalls.insert", node_api_rule), took("addresses.insert"))


async def one(controllers: int, workers: int, op_seconds: float, hostkey_delay: float) -> tuple[float, float]:
    """(wall seconds of ensure(), critical path seconds) for a fresh cluster of this size."""
    with FakeCompute(project="khwtui-bench", op_latency=op_seconds, hostkey_delay=hostkey_delay, wait_cap=150.0) as fake:
        config = config_mod.from_dict({
            "provider": {"kind": "gcp"},
            "gcp": {"project": "khwtui-bench", "api_endpoint": fake.endpoint},
            "topology": {"controllers": controllers, "workers": workers},
        })
        topo = Topology(config)
        provider = GcpProvider(config, topo, Path("/nonexistent-state"), CLIENT_KEY)
        start = time.monotonic()
        await provider.ensure(lambda line: None)
        wall = time.monotonic() - start
        return wall, critical_path(fake.operation_spans(), hostkey_delay, topo.names.allow_node_api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2+2,3+3", help="controllers+workers, comma separated")
    parser.add_argument("--op-seconds", type=float, default=2.0)
    parser.add_argument("--hostkey-delay", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLOUDSDK_CONFIG"] = tmp  # no gcloud settings of this machine's user
        rows = []
        for size in args.sizes.split(","):
            controllers, workers = (int(n) for n in size.split("+"))
            wall, path = asyncio.run(one(controllers, workers, args.op_seconds, args.hostkey_delay))
            rows.append((size, wall, path))
    print(f"compute on the fake: {args.op_seconds:g} s operations, host keys {args.hostkey_delay:g} s after the insert; load average {os.getloadavg()[0]:.2f}")
    for size, wall, path in rows:
        print(f"{size:>6}: wall {wall:5.1f} s, critical path {path:5.1f} s, ratio {wall / path:.2f}")


if __name__ == "__main__":
    main()
