"""Wall time of `khwtui up --auto --until etcd` on a fresh local 3+1 cluster, and of the no-op rerun.

Run as root: python3 benchmarks/bench_up_until_etcd.py   (uses the test mirror; prints seconds)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cli_timing  # first: puts tests/ on the import path
import janitor
from localcluster import LocalCluster, local_config
from mirror import default_cache
from mirror.server import MirrorServer
from mirror.tarballs import build_release_tree


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = build_release_tree(Path(tmp) / "releases", default_cache())
        with MirrorServer(tree.root) as server:
            cluster = LocalCluster(Path(tmp) / "c", local_config(f"t{janitor.new_prefix()}", 3, 1, tree.config(server.url)))
            try:
                cold = cli_timing.timed(cluster, "up", "--auto", "--until", "etcd")
                rerun = cli_timing.timed(cluster, "up", "--auto", "--until", "etcd")
                start = time.monotonic()
                cluster.down()
                down = time.monotonic() - start
            finally:
                janitor.sweep(include_own=True)
    print(f"up --until etcd, fresh 3+1 cluster: {cold:.1f} s")
    print(f"no-op rerun:                        {rerun:.1f} s")
    print(f"down --yes:                         {down:.1f} s")


if __name__ == "__main__":
    main()
