"""A local cluster driven through the real CLI, as a user would: config file, state folder, khwtui.

Binaries come from the test mirror on 127.0.0.1 (the operator's machine downloads and verifies
them); the cluster's host prefix is registered with the janitor so a crashed run is cleaned up.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import janitor
import tomli_w

from khwtui.providers import nspawn, rootfs
from khwtui.providers.local import cluster_prefix

if TYPE_CHECKING:
    from mirror.server import MirrorServer

STANDINS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
KUBE_TEMPLATE = "kubernetes/v{version}/bin/linux/{arch}/{name}"

K8S_VERSION = "1.35.4"  # the last minor that accepts containerd 1.x (Debian 12 ships 1.6)


def local_config(name: str, controllers: int, workers: int, mirror: dict, **extra: dict) -> dict:
    """A local-provider config pinned to the Debian versions the test mirror serves."""
    subnet = janitor.claim_subnet()
    raw = {
        "cluster": {"name": name, "kubernetes_version": K8S_VERSION},
        "provider": {"kind": "local"},
        "local": {"outbound": False},
        "topology": {"controllers": controllers, "workers": workers},
        "network": {"node_cidr": f"10.{subnet}.0.0/24"},
        "versions": {**mirror["versions"], "crictl": ""},
        "binaries": copy.deepcopy(mirror["binaries"]),  # shared by the session: extra values must not leak into it
        "pki": {"key_type": "ecdsa-p256"},
    }
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    return raw


def publish_standins(root: Path, base_url: str, version: str) -> tuple[str, dict[str, str]]:
    """Put the stand-in harness on the mirror as every kube-* release binary (and as kubectl, which
    the control plane installs but nothing here runs). Returns ([binaries.urls] kubernetes, sums)."""
    from standins import build

    data = build(version)
    sums = {}
    for name in (*STANDINS, "kubectl"):
        path = root / KUBE_TEMPLATE.format(version=version, arch="amd64", name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    return f"{base_url}/{KUBE_TEMPLATE}", sums


def fresh_download_cache(folder: Path) -> dict[str, str]:
    """The environment for a run whose operator download cache starts empty (no verified copy from
    earlier runs to fall back on) while the node root stays the shared, already built one: an
    empty XDG_CACHE_HOME alone would debootstrap a new root from the Debian mirror (minutes)."""
    shared = rootfs.default_cache_dir()
    shared.mkdir(parents=True, exist_ok=True)
    link = folder / "khwtui" / shared.name
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(shared, target_is_directory=True)
    return {"XDG_CACHE_HOME": str(folder)}


@contextlib.contextmanager
def serve_release_mirror(folder: Path) -> Iterator[dict]:
    """The test mirror served on 127.0.0.1: Debian's etcd/containerd/runc/CNI in upstream layouts plus
    the kube-* stand-ins for K8S_VERSION. {"versions", "binaries", "tree", "server"}."""
    from mirror import default_cache
    from mirror.server import MirrorServer
    from mirror.tarballs import build_release_tree

    tree = build_release_tree(folder, default_cache())
    with MirrorServer(tree.root) as server:
        config = tree.config(server.url)
        url, sums = publish_standins(tree.root, server.url, K8S_VERSION)
        config["binaries"]["urls"]["kubernetes"] = url
        config["binaries"]["sha256"].update(sums)
        yield {**config, "tree": tree, "server": server}


@dataclass
class LocalCluster:
    """`apt`: an AptRepo to serve to the nodes on the bridge's host address (local.apt_mirror).
    `releases`: the release_mirror fixture, served to the nodes on the bridge too, with the config's
    [binaries.urls] pointing there, so that nodes can download release files (node delivery)."""

    root: Path
    raw: dict
    apt: object | None = None
    releases: dict | None = None
    prefix: str = field(init=False)
    servers: list = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.prefix = cluster_prefix(self.raw["cluster"]["name"], self.state_dir)
        janitor.register(self.prefix)
        if self.apt is not None:
            self._serve_apt()
        if self.releases is not None:
            self._serve_releases()
        self.write_config()

    def write_config(self) -> None:
        self.config_path.write_text(tomli_w.dumps(self.raw))

    def _serve_apt(self) -> None:
        server = self.serve(self.apt.path)  # type: ignore[union-attr]
        self.raw.setdefault("local", {}).update({"apt_mirror": server.url, "apt_key": str(self.apt.keyring)})  # type: ignore[union-attr]

    def _serve_releases(self) -> None:
        """The mirror's tree on the bridge; [binaries] is copied, never edited in place (it is shared)."""
        server = self.serve(self.releases["tree"].root)  # type: ignore[index]
        local = self.releases["server"].url  # type: ignore[index]
        binaries = self.raw["binaries"]
        urls = {name: url.replace(local, server.url) for name, url in binaries["urls"].items()}
        self.raw["binaries"] = {**binaries, "urls": urls, "sha256": dict(binaries["sha256"])}

    def serve(self, folder: Path) -> MirrorServer:
        """Serve `folder` to the nodes on the bridge's host address; stopped by down()."""
        server = serve_on_bridge(self.prefix, self.raw["network"]["node_cidr"], folder)
        self.servers.append(server)
        return server

    @property
    def config_path(self) -> Path:
        return self.root / "cluster.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def khwtui(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess (no terminal); stdout and stderr are captured as text."""
        command = [sys.executable, "-m", "khwtui", *args, "--config", str(self.config_path), "--state-dir", str(self.state_dir)]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "khwtui", *args, "--config", str(self.config_path), "--state-dir", str(self.state_dir)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                env={**os.environ, **(env or {})})

    def state(self) -> dict:
        return tomllib.loads((self.state_dir / "state.toml").read_text())

    def host_objects(self) -> list[nspawn.HostObject]:
        return nspawn.discover(self.prefix)

    def runtime(self) -> dict:
        return tomllib.loads((self.state_dir / "local" / "runtime.toml").read_text())

    def down(self) -> None:
        """Tear down through the CLI; whatever is left is the janitor's (and the test's failure)."""
        if (self.state_dir / "state.toml").exists():
            self.khwtui("down", "--yes", timeout=300)
        for server in self.servers:
            server.__exit__(None, None, None)
        nspawn.remove([o for o in self.host_objects() if o.kind == "link"], lambda line: None)


@contextmanager
def built_until(root: Path, mirror: dict, controllers: int, workers: int, stage: str) -> Iterator[LocalCluster]:
    """A fresh local cluster built through the CLI up to and including `stage`, torn down after."""
    cluster = LocalCluster(root, local_config(f"t{janitor.new_prefix()}", controllers, workers, mirror))
    try:
        built = cluster.khwtui("up", "--auto", "--until", stage)
        assert built.returncode == 0, built.stdout + built.stderr
        yield cluster
    finally:
        cluster.down()


def serve_apt_on_bridge(prefix: str, node_cidr: str, apt: object) -> MirrorServer:
    """Serve an AptRepo on the host side of the prefix's bridge. Stop it with `__exit__`."""
    return serve_on_bridge(prefix, node_cidr, apt.path)  # type: ignore[attr-defined]


def serve_on_bridge(prefix: str, node_cidr: str, folder: Path) -> MirrorServer:
    """Serve a folder on the host side of the prefix's bridge, which is made here with the
    provider's own primitive (ensure() adopts it), before the first node boots. Stop it with
    `__exit__`."""
    from mirror.server import MirrorServer

    net = ipaddress.IPv4Network(node_cidr)
    gateway = str(net.network_address + 1)
    nspawn.ensure_bridge(nspawn.Names(prefix).bridge, f"{gateway}/{net.prefixlen}")
    server = MirrorServer(folder, host=gateway)
    server.__enter__()
    return server


def keyscan(address: str) -> str:
    """The ed25519 host key a node presents, as `ssh-keyscan` sees it ("ssh-ed25519 AAAA...")."""
    out = subprocess.run(["ssh-keyscan", "-T", "5", "-t", "ed25519", address], capture_output=True, text=True, check=True).stdout
    fields = [line.split() for line in out.splitlines() if line and not line.startswith("#")]
    return " ".join(fields[0][1:3])


def status_results(cluster: LocalCluster) -> tuple[int, list[tuple[str, str, str]]]:
    """`khwtui status --json`: its exit code and each probe's (probe, node, result), latency left out."""
    result = cluster.khwtui("status", "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return result.returncode, sorted((e["probe"], e["node"], e["result"]) for e in events if e["kind"] == "health")
