"""Wall times of the local provider: the Debian node root built cold and found warm, a 3+2 (+lb)
cluster's nodes brought up by `khwtui up --auto --only compute` from that root, and `down --yes`.

Run as root: python3 benchmarks/bench_local_nodes.py   (debootstraps from the host's Debian
mirror into a fresh cache folder, so the cold number is a real first run; prints seconds)
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import cli_timing  # first: puts tests/ on the import path
import janitor
from localcluster import LocalCluster, local_config
from mirror import default_cache
from mirror.tarballs import build_release_tree

from khwtui.providers import rootfs


def root_build_seconds(cache: rootfs.RootfsCache) -> float:
    """One ensure_rootfs(): a debootstrap when the cache folder is empty, a lookup when not."""
    start = time.monotonic()
    asyncio.run(rootfs.ensure_rootfs(cache, lambda line: None))
    return time.monotonic() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        xdg = Path(tmp) / "xdg"
        os.environ["XDG_CACHE_HOME"] = str(xdg)  # for this process and the khwtui it runs
        assert rootfs.default_cache_dir() == xdg / "khwtui" / "rootfs"
        mirror_uri = rootfs.resolve_mirror("").uri
        if mirror_uri is None:
            raise SystemExit("no Debian mirror in this host's apt sources")
        cache = rootfs.RootfsCache(rootfs.default_cache_dir(), mirror_uri)
        cold = root_build_seconds(cache)
        warm = root_build_seconds(cache)
        tree = build_release_tree(Path(tmp) / "releases", default_cache())
        mirror = tree.config("http://127.0.0.1:9")  # compute fetches nothing; the config needs sums and URLs
        cluster = LocalCluster(Path(tmp) / "c", local_config(f"t{janitor.new_prefix()}", 3, 2, mirror))
        try:
            up = cli_timing.timed(cluster, "up", "--auto", "--only", "compute")
            nodes = sorted(cluster.state()["nodes"])
            rerun = cli_timing.timed(cluster, "up", "--auto", "--only", "compute")
            down = cli_timing.timed(cluster, "down", "--yes")
        finally:
            janitor.sweep(include_own=True)
    print(f"node root, cold (debootstrap):        {cold:.1f} s")
    print(f"node root, warm (cached):             {warm:.2f} s")
    print(f"up --only compute, warm root:         {up:.1f} s  ({', '.join(nodes)} booted, keys pinned)")
    print(f"no-op rerun:                          {rerun:.1f} s")
    print(f"down --yes:                           {down:.1f} s")


if __name__ == "__main__":
    main()
