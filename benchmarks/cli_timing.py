"""What the cluster benchmarks share: the test harness on the import path, and the wall time of
one CLI command on a LocalCluster (a failing command ends the benchmark with its output)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from localcluster import LocalCluster


def timed(cluster: LocalCluster, *args: str) -> float:
    start = time.monotonic()
    result = cluster.khwtui(*args)
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    return time.monotonic() - start
