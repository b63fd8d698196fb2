"""Wall times of the local provider: the Debian node root built cold and found warm, a 3+2 (+lb)
cluster's nodes brought up by `khwtui up --auto --only compute` from that root, and `down --yes`.

Run as root: python3 benchmarks/bench_local_nodes.py   (debootstraps from the host's Debian
mirror into a fresh cache folder, so the cold number is a real first run; prints seconds)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import janitor
from localcluster import LocalCluster, local_config
from mirror import default_cache
from mirror.tarballs import build_release_tree

from khwtui.providers import rootfs


def root_build_seconds(cache: Path) -> float:
    """One ensure_rootfs() on `cache`: a debootstrap when the folder is empty, a lookup when not."""
    mirror = rootfs.resolve_mirror("")
    if mirror.uri is None:
        raise SystemExit("no Debian mirror in this host's apt sources")
    start = time.monotonic()
    asyncio.run(rootfs.ensure_rootfs(rootfs.RootfsCache(cache, mirror.uri), lambda line: None))
    return time.monotonic() - start


def timed(cluster: LocalCluster, *args: str, env: dict[str, str]) -> float:
    start = time.monotonic()
    result = cluster.khwtui(*args, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    return time.monotonic() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        xdg = Path(tmp) / "xdg"
        cache = xdg / "khwtui" / "rootfs"  # where default_cache_dir() points with XDG_CACHE_HOME=xdg
        env = {"XDG_CACHE_HOME": str(xdg)}
        os.environ.update(env)
        assert rootfs.default_cache_dir() == cache
        cold = root_build_seconds(cache)
        warm = root_build_seconds(cache)
        tree = build_release_tree(Path(tmp) / "releases", default_cache())
        mirror = tree.config("http://127.0.0.1:9")  # compute fetches nothing; the config needs sums and URLs
        cluster = LocalCluster(Path(tmp) / "c", local_config(f"t{janitor.new_prefix()}", 3, 2, mirror))
        try:
            up = timed(cluster, "up", "--auto", "--only", "compute", env=env)
            nodes = sorted(cluster.state()["nodes"])
            rerun = timed(cluster, "up", "--auto", "--only", "compute", env=env)
            down = timed(cluster, "down", "--yes", env=env)
        finally:
            janitor.sweep(include_own=True)
    print(f"node root, cold (debootstrap):        {cold:.1f} s")
    print(f"node root, warm (cached):             {warm:.2f} s")
    print(f"up --only compute, warm root:         {up:.1f} s  ({', '.join(nodes)} booted, keys pinned)")
    print(f"no-op rerun:                          {rerun:.1f} s")
    print(f"down --yes:                           {down:.1f} s")


if __name__ == "__main__":
    main()
