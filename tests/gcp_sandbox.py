"""A gcp cluster to try by hand, offline, as root: `python3 tests/gcp_sandbox.py [-c N] [-w N] [--lb DESIGN] [--op-fail-rate 0.3]`.

Starts what the gcp end-to-end tests use — the Compute fake on 127.0.0.1 whose instances boot as
nspawn nodes (with the test apt repository and the stand-ins' python3), the data plane of its
load balancers, the release mirror with the kube-* stand-ins — writes a config pointed at them,
prints the command to run khwtui against it, and keeps it all up until Ctrl-C; then `down` runs
and the nodes are removed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import janitor
from fakegce import FakeCompute
from gcp_dataplane import LoadBalancers
from localcluster import K8S_VERSION, LocalCluster, publish_standins
from mirror import default_cache
from mirror.aptrepo import NODE_PACKAGES, build_apt_repo
from mirror.server import MirrorServer
from mirror.tarballs import build_release_tree
from test_gcp_local import gcp_cluster
from workerbed import STANDIN_PACKAGES


@contextmanager
def sandbox(root: Path, controllers: int, workers: int, lb: str, op_fail_rate: float = 0.0) -> Iterator[tuple[FakeCompute, LocalCluster]]:
    """Everything the gcp end-to-end tests use, under `root` (this process's environment is pointed
    at an empty gcloud config there); afterwards `down` has run and the nodes are removed."""
    os.environ.update({"NO_GCE_CHECK": "true", "CLOUDSDK_CONFIG": str(root / "gcloud")})
    with ExitStack() as stack:
        tree = build_release_tree(root / "releases", default_cache())
        server = stack.enter_context(MirrorServer(tree.root))
        mirror = tree.config(server.url)
        mirror["binaries"]["urls"]["kubernetes"], sums = publish_standins(tree.root, server.url, K8S_VERSION)
        mirror["binaries"]["sha256"].update(sums)
        apt = build_apt_repo(root / "apt", default_cache(), list(NODE_PACKAGES))
        knobs = {"apt": apt, "packages": STANDIN_PACKAGES, "gcp": {"load_balancer": lb}, "op_fail_rate": op_fail_rate}
        fake, cluster = stack.enter_context(gcp_cluster(root, janitor.new_prefix(), mirror, controllers, workers, **knobs))
        stack.enter_context(LoadBalancers(fake, netns=fake.backing.namespaces))
        yield fake, cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--controllers", type=int, default=2)
    parser.add_argument("-w", "--workers", type=int, default=1)
    parser.add_argument("--lb", choices=("target-pool", "backend-service"), default="target-pool")
    parser.add_argument("--op-fail-rate", type=float, default=0.0, help="share of operations that end in GCE's transient internal error")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="khwtui-gcp-sandbox-"))
    with sandbox(root, args.controllers, args.workers, args.lb, args.op_fail_rate) as (_, cluster):
        env = f"NO_GCE_CHECK=true CLOUDSDK_CONFIG={shlex.quote(os.environ['CLOUDSDK_CONFIG'])}"
        print(f"{env} {shlex.quote(sys.executable)} -m khwtui --config {cluster.config_path} --state-dir {cluster.state_dir}")
        print("Ctrl-C to tear it all down", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            print("tearing down", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    main()
