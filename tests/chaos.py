"""SIGKILLs at seeded random moments of a gcp build, then one run to the end (issue 15).

Shared by tests/test_chaos_gcp_local.py (a few kills, in CI) and benchmarks/bench_chaos.py (the
full twenty). The first run dies at the crash point `gcp.insert-sent` (its first cloud insert
sent, not waited on); every later run is SIGKILLed from outside after a delay drawn from the
seeded generator. After every kill state.toml must load (and validate); the last run must end
with exit 0 or 3, and every planned cloud resource must exist exactly once in the fake's store.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

from fakegce import FakeCompute
from localcluster import LocalCluster
from test_gcp_local import cluster_config

from khwtui.artifacts.sshkey import client_key
from khwtui.core import crashpoints
from khwtui.model.state import StateDir
from khwtui.model.topology import Topology
from khwtui.providers.gcp import GcpProvider
from khwtui.providers.gcp_api import KINDS

UNTIL = ("up", "--auto", "--until", "frontend")
FIRST_POINT = "gcp.insert-sent"
DONE = (0, 3)  # 3: rbac stays unverified with the stand-in apiserver


@dataclass
class Chaos:
    """What happened: each run's seconds before its kill (0.0: at the crash point; None: it ended
    first, with its exit code in `exits`)."""

    kills: list[float | None] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)
    final: subprocess.CompletedProcess[str] | None = None
    seconds: float = 0.0


def run_with_kills(cluster: LocalCluster, kills: int, seed: int, latest: float) -> Chaos:
    """`kills` runs of `up --until frontend`, each killed (the first at FIRST_POINT, the others after
    a seeded delay in [1, latest) s), state.toml loaded after each; then one run to the end."""
    rng = random.Random(seed)
    chaos = Chaos()
    start = time.monotonic()
    for i in range(kills):
        if i == 0:
            proc = cluster.popen(*UNTIL, env={crashpoints.ENV: FIRST_POINT})
            out, err = proc.communicate(timeout=900)
            assert proc.returncode == -signal.SIGKILL, f"the first run did not die at {FIRST_POINT}: {out[-2000:]}{err}"
            chaos.kills.append(0.0)
        else:
            delay = rng.uniform(1.0, latest)
            proc = cluster.popen(*UNTIL)
            try:
                proc.communicate(timeout=delay)  # reads its output meanwhile; the run may end before its moment
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
            chaos.kills.append(round(delay, 1) if proc.returncode == -signal.SIGKILL else None)
        chaos.exits.append(proc.returncode)
        StateDir(cluster.state_dir).load()  # parses and fits the schema, or raises StateError naming the key
    chaos.final = cluster.khwtui(*UNTIL, timeout=1200)
    chaos.seconds = time.monotonic() - start
    return chaos


def planned(cluster: LocalCluster) -> Counter[tuple[str, str]]:
    """Every resource `plan` lists for compute and the front end, once each."""
    config = cluster_config(cluster)
    _, public_key = client_key(cluster.state_dir / "ssh")
    plan = GcpProvider(config, Topology(config), cluster.state_dir, public_key).plan()
    return Counter((r.kind, r.name) for r in plan.resources if r.stage in ("", "frontend"))


def made(fake: FakeCompute) -> Counter[tuple[str, str]]:
    """Every resource in the fake's store as `plan` names it (boot disks come with their instances)."""
    return Counter((KINDS[c].noun, r["name"]) for c in KINDS if c != "disks" for r in fake.resources(c))
