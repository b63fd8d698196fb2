"""Binary delivery, push against node, side by side on local nodes with the operator's uplink shaped.

For each mode, a fresh local cluster (the test mirror and apt repository served to the nodes on
the cluster's bridge, as the tests do) is brought to `compute`; then this machine's SSH traffic
to the nodes (TCP to port 22, leaving on the bridge) is shaped to 20 Mbit/s with tc on that
bridge, which this benchmark's cluster created, while the mirror's traffic stays unshaped; then
the etcd to workers stages run and are timed (`--until control-plane`, then frontend and workers:
rbac needs a real apiserver, which the test stand-ins are not). Bytes uploaded = the bytes tc
counted in the shaped class. The test mirror's kube-* stand-ins are small scripts; with
--upstream-sizes each becomes a Python zip application (the script as __main__.py beside a stored
padding member that Python never reads) of about its upstream v1.35 amd64 size, so the transfer
weighs what it does with the real binaries. The padding is random bytes: khwtui's SSH links are
zlib-compressed, which leaves 30-46 % of a real Go binary (terraform and docker, measured), so push
is measured at its slowest, never flattered by padding that compresses to nothing. Run as root:

    python3 benchmarks/bench_delivery.py [--sizes 2+2,3+3] [--modes push,node] [--upstream-sizes]

Measured 2026-12-05 with --sizes 2+2 --upstream-sizes on a shared 2-core machine under load:
push 548.8 s and 1095.26 MB, node 89.8 s and 0.39 MB (6.1x faster). 2026-12-06, the machine
otherwise idle: push 465.6 s and 1095.27 MB, node 38.1 s and 0.38 MB (12.2x faster); node alone
with --sizes 2+2,3+3: 39.0 s and 0.38 MB, 44.6 s and 0.55 MB (half again the nodes, +14 %).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import cli_timing  # first: puts tests/ on the import path  # noqa: F401
import janitor
from localcluster import K8S_VERSION, KUBE_TEMPLATE, LocalCluster, local_config, serve_release_mirror
from standins import build
from workerbed import install_standin_runtime, shells, worker_apt_repo

from khwtui.providers import nspawn

UPLINK = "20mbit"
MODES = ("push", "node")
STEPS = (("--until", "control-plane"), ("--only", "frontend,workers"))
UPSTREAM_MB = {"kube-apiserver": 90, "kube-controller-manager": 85, "kube-scheduler": 65, "kubectl": 57, "kubelet": 78, "kube-proxy": 67}


def pad_standins(mirror: dict) -> None:
    """Each kube-* file on the mirror padded to about its upstream size (distinct files, as upstream's
    are), its pinned sum updated in this benchmark's own copy of the mirror config."""
    script = build(K8S_VERSION)
    for name, megabytes in UPSTREAM_MB.items():
        path = mirror["tree"].root / KUBE_TEMPLATE.format(version=K8S_VERSION, arch="amd64", name=name)
        with path.open("wb") as out:
            out.write(b"#!/usr/bin/env python3\n")
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as app:
                app.writestr("__main__.py", script)
                app.writestr("padding", random.Random(name).randbytes(megabytes * 1_000_000))
        mirror["binaries"]["sha256"][name] = hashlib.sha256(path.read_bytes()).hexdigest()


def tc(*args: str) -> str:
    return subprocess.run(["tc", *args], check=True, capture_output=True, text=True).stdout


def shape_ssh(bridge: str) -> None:
    """Operator→node SSH (TCP to port 22) through a 20 Mbit/s class; everything else unshaped."""
    tc("qdisc", "replace", "dev", bridge, "root", "handle", "1:", "htb", "default", "20")
    tc("class", "add", "dev", bridge, "parent", "1:", "classid", "1:10", "htb", "rate", UPLINK, "ceil", UPLINK)
    tc("class", "add", "dev", bridge, "parent", "1:", "classid", "1:20", "htb", "rate", "10gbit")
    tc("filter", "add", "dev", bridge, "protocol", "ip", "parent", "1:", "prio", "1", "u32",
       "match", "ip", "protocol", "6", "0xff", "match", "ip", "dport", "22", "0xffff", "flowid", "1:10")


def shaped_bytes(bridge: str) -> int:
    """Bytes sent through the shaped SSH class so far."""
    stats = tc("-s", "class", "show", "dev", bridge, "classid", "1:10").split()
    return int(stats[stats.index("Sent") + 1])


def measure(folder: Path, mirror: dict, apt: object, controllers: int, workers: int, mode: str) -> tuple[float, int]:
    raw = local_config(f"t{janitor.new_prefix()}", controllers, workers, mirror, binaries={"delivery": mode})
    cluster = LocalCluster(folder / f"{mode}-{controllers}-{workers}", raw, apt=apt, releases=mirror)
    try:
        done = cluster.khwtui("up", "--auto", "--until", "compute")
        if done.returncode != 0:
            raise SystemExit(done.stdout + done.stderr)
        install_standin_runtime([node for name, node in shells(cluster.state_dir).items() if name != "lb"])
        bridge = nspawn.Names(cluster.prefix).bridge
        shape_ssh(bridge)
        start = time.monotonic()
        for step in STEPS:
            done = cluster.khwtui("up", "--auto", *step, timeout=3600)
            if done.returncode not in (0, 3):  # 3: the stand-ins cannot show Ready
                raise SystemExit(done.stdout + done.stderr)
        return time.monotonic() - start, shaped_bytes(bridge)
    finally:
        cluster.down()


def modes_of(text: str) -> tuple[str, ...]:
    """The delivery modes named, in MODES order; an unknown one is a usage error."""
    named = text.split(",")
    unknown = [m for m in named if m not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mode {', '.join(unknown)}; modes: {', '.join(MODES)}")
    return tuple(m for m in MODES if m in named)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2+2", help="controllers+workers, comma-separated")
    parser.add_argument("--modes", default="push,node", type=modes_of, help="delivery modes, comma-separated (node alone: how it grows with the size)")
    parser.add_argument("--upstream-sizes", action="store_true", help="pad the kube-* stand-ins to upstream sizes")
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split("+")) for size in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, serve_release_mirror(Path(tmp) / "releases") as mirror:
        if args.upstream_sizes:
            pad_standins(mirror)
        apt = worker_apt_repo(Path(tmp) / "apt")
        try:
            for controllers, workers in sizes:
                for mode in args.modes:
                    seconds, sent = measure(Path(tmp), mirror, apt, controllers, workers, mode)
                    rows.append((f"{controllers}+{workers}", mode, seconds, sent))
                    print(f"{controllers}+{workers} {mode:4}: {seconds:6.1f} s, {sent / 1e6:8.2f} MB uploaded over SSH", flush=True)
        finally:
            janitor.sweep(include_own=True)
    if args.modes == MODES:
        compare(rows)


def compare(rows: list[tuple[str, str, float, int]]) -> None:
    """Per size, node against push."""
    for size in dict.fromkeys(r[0] for r in rows):
        push, node = (next(r for r in rows if r[0] == size and r[1] == m) for m in MODES)
        print(f"{size}: node is {push[2] / node[2]:.1f}x faster than push and uploads {node[3] / 1e6:.2f} MB "
              f"instead of {push[3] / 1e6:.2f} MB (operator SSH shaped to {UPLINK}/s)")


if __name__ == "__main__":
    main()
