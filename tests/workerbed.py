"""The test side of worker nodes: a shell in a node, the stand-ins' python3, a busybox image, pods.

A node is entered from the host with nsenter, by the init PID the local provider recorded (the
same nodes serve the machines tests). Pods run with `ctr run --cni` from a busybox OCI archive
built here from Debian's busybox-static (stdlib only: tarfile, json, hashlib), imported locally,
so nothing is pulled from a registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest
    from localcluster import LocalCluster

    from khwtui.artifacts.render import NodeFile

IMAGE = "docker.io/library/busybox:khwtui-test"
NAMESPACE = "khwtui-test"
CTR = f"/usr/local/bin/ctr --namespace {NAMESPACE}"
IMAGE_ARCHIVE = "/root/busybox-khwtui-test.tar"
STANDIN_PACKAGES = ("python3", "python3-yaml")
MTIME = 1686355200  # one fixed time: the same archive bytes every run


@dataclass(frozen=True)
class NodeShell:
    """A root shell in a local node, through its init process's namespaces."""

    name: str
    init_pid: int

    def run(self, command: str, *, stdin: bytes | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--target={self.init_pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "sh", "-c", command]
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
        result = subprocess.CompletedProcess(argv, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name}: `{command}` exited {result.returncode}: {result.stdout}{result.stderr}")
        return result


def shells(local_state_dir: Path) -> dict[str, NodeShell]:
    """Every node of a local cluster, from its runtime record (read again after a node restarts)."""
    runtime = tomllib.loads((local_state_dir / "local" / "runtime.toml").read_text())
    return {name: NodeShell(name, node["init_pid"]) for name, node in runtime["nodes"].items()}


def on_all(nodes: list[NodeShell], command: str) -> None:
    with ThreadPoolExecutor(len(nodes) or 1) as pool:
        list(pool.map(lambda node: node.run(command, timeout=600), nodes))


def install_standin_runtime(nodes: list[NodeShell]) -> None:
    """python3 and python3-yaml for the kube-* stand-ins, from the nodes' own (test) apt source."""
    on_all(nodes, "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                  f"--no-install-recommends {' '.join(STANDIN_PACKAGES)}")


# --- a busybox image ----------------------------------------------------------------------------


@cache
def busybox_binary() -> bytes:
    """/bin/busybox from the host's candidate busybox-static .deb (cached with the mirror's .debs)."""
    from mirror import default_cache
    from mirror.aptrepo import fetch_debs

    deb = fetch_debs(default_cache(), ["busybox-static"])["busybox-static"]
    tree = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb.path)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tree)) as archive:
        member = archive.extractfile("./bin/busybox")
        assert member is not None
        return member.read()


def _tar(entries: list[tuple[str, bytes | None, int, str]]) -> bytes:
    """A tar of (name, data, mode, link target); data None with a target is a symlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data, mode, target in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, MTIME
            if target:
                info.type, info.linkname = tarfile.SYMTYPE, target
                archive.addfile(info)
            else:
                info.size = len(data or b"")
                archive.addfile(info, io.BytesIO(data or b""))
    return out.getvalue()


def _blob(data: bytes, media_type: str) -> tuple[dict, tuple[str, bytes]]:
    digest = hashlib.sha256(data).hexdigest()
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}, (f"blobs/sha256/{digest}", data)


@cache
def busybox_archive() -> bytes:
    """A one-layer OCI image archive named IMAGE: busybox, a shell and a page to serve."""
    layer = _tar([
        ("bin/busybox", busybox_binary(), 0o755, ""),
        ("bin/sh", None, 0o777, "busybox"),
        ("www/index.html", b"served by a khwtui test pod\n", 0o644, ""),
    ])
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }).encode()
    layer_ref, layer_blob = _blob(layer, "application/vnd.oci.image.layer.v1.tar")
    config_ref, config_blob = _blob(config, "application/vnd.oci.image.config.v1+json")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config_ref, "layers": [layer_ref]}).encode()
    manifest_ref, manifest_blob = _blob(manifest, "application/vnd.oci.image.manifest.v1+json")
    manifest_ref["annotations"] = {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": IMAGE.rsplit(":", 1)[1]}
    index = json.dumps({"schemaVersion": 2, "manifests": [manifest_ref]}).encode()
    files = [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()), ("index.json", index),
             layer_blob, config_blob, manifest_blob]
    return _tar([(name, data, 0o644, "") for name, data in files])


# --- pods ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    node: NodeShell
    name: str
    ip: str

    def exec(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        exec_id = hashlib.sha256(command.encode()).hexdigest()[:12]
        return self.node.run(f"{CTR} task exec --exec-id {exec_id} {self.name} {command}", check=check, timeout=60)

    def fetch(self, url: str) -> str:
        """An HTTP GET from inside the pod (busybox wget; its -T option crashes Debian 12's static build)."""
        return self.exec(f"/bin/busybox wget -q -O - {shlex.quote(url)}").stdout


def start_web_pod(node: NodeShell, name: str = "web") -> Pod:
    """A busybox httpd pod on the node's CNI network (the image imported first); returns it with its IP."""
    node.run(f"cat > {IMAGE_ARCHIVE} && {CTR} image import {IMAGE_ARCHIVE}", stdin=busybox_archive())
    node.run(f"{CTR} run -d --cni {IMAGE} {name} /bin/busybox httpd -f -p 80 -h /www")
    return Pod(node, name, pod_ip(node, name))


def pod_ip(node: NodeShell, name: str, timeout: float = 30) -> str:
    """The IPv4 address of a running pod's eth0 (polled: the task may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = node.run(f"{CTR} task exec --exec-id ip-{name} {name} /bin/busybox ip -4 -o addr show dev eth0", check=False)
        match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", shown.stdout)
        if match:
            return match.group(1)
        assert time.monotonic() < deadline, f"{node.name}: no address on pod {name}'s eth0: {shown.stdout}{shown.stderr}"
        time.sleep(0.2)


def remove_pods(node: NodeShell) -> None:
    """Kill and delete the test pods, their snapshots and their address leases (ctr 1.6 leaves a
    detached pod's CNI lease behind). A pod's PID 1 ignores SIGTERM, hence SIGKILL."""
    for name in node.run(f"{CTR} container list --quiet", check=False).stdout.split():
        node.run(f"{CTR} task kill --signal SIGKILL {name}; {CTR} task delete --force {name}; {CTR} container delete {name}", check=False)
    for line in node.run(f"{CTR} snapshot list", check=False).stdout.splitlines()[1:]:
        node.run(f"{CTR} snapshot remove {shlex.quote(line.split()[0])}", check=False)
    node.run(f"grep -l -s '^{NAMESPACE}-' /var/lib/cni/networks/*/* | xargs -r rm -f", check=False)


# --- what is on a node -----------------------------------------------------------------------------


def stat_files(node: NodeShell, paths: list[str]) -> dict[str, str]:
    """path -> "<sha256> <mode> <owner> <group>" as placed on the node ("missing" when absent)."""
    script = ('for f in "$@"; do if [ -f "$f" ]; then printf "%s %s\\n" "$(sha256sum < "$f" | cut -d" " -f1)" '
              '"$(stat -c "%a %U %G" "$f")"; else echo missing; fi; done')
    out = node.run(f"sh -c {shlex.quote(script)} files {' '.join(shlex.quote(p) for p in paths)}").stdout.splitlines()
    return dict(zip(paths, out, strict=True))


def unit_starts(node: NodeShell, units: list[str]) -> dict[str, str]:
    """unit -> when it last became active and how often systemd restarted it."""
    out = node.run(f"systemctl show --property=Id,ActiveEnterTimestampMonotonic,NRestarts {' '.join(units)}").stdout
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line) for block in out.strip().split("\n\n")]
    return {b["Id"]: f"{b['ActiveEnterTimestampMonotonic']}/{b['NRestarts']}" for b in blocks}


def routes_of(node: NodeShell) -> set[tuple[str, str]]:
    """(destination, next hop) of every route through a gateway in the node's table."""
    lines = node.run("ip -4 route show").stdout.splitlines()
    return {(f[0], f[2]) for f in (line.split() for line in lines) if len(f) > 2 and f[1] == "via" and f[0] != "default"}


# --- what khwtui should have placed -----------------------------------------------------------------


def artifacts_of(config_path: Path, state_dir: Path):
    """The cluster's certificates, key and topology, read from its state folder as khwtui reads them."""
    from khwtui.artifacts.encryption import load_or_create_key
    from khwtui.artifacts.nodefiles import Artifacts
    from khwtui.artifacts.pki import Pki
    from khwtui.model.cluster import open_cluster

    cluster = open_cluster(str(config_path), str(state_dir))
    pki_dir = cluster.state_dir.pki_dir
    return Artifacts(cluster.topology, Pki(pki_dir, cluster.config), load_or_create_key(pki_dir))


def bed_facts(containerd_on_overlay: bool):
    """The facts of a node on this host, known independently of khwtui's facts command: the host's
    cgroup layout, its kernel modules and its capability bounding set (nodes get all of it)."""
    import os

    from khwtui.artifacts.workers_files import NodeFacts

    bounding = int(re.search(r"CapBnd:\s*([0-9a-f]+)", Path("/proc/self/status").read_text()).group(1), 16)  # type: ignore[union-attr]
    return NodeFacts(cgroup_v2=Path("/sys/fs/cgroup/cgroup.controllers").exists(),
                     modules=Path(f"/lib/modules/{os.uname().release}").is_dir(),
                     lower_oom=bool(bounding >> 24 & 1),  # CAP_SYS_RESOURCE
                     containerd_on_overlay=containerd_on_overlay, resolved=False,
                     conntrack_max_writable=False)  # a node has its own network namespace


def release_files(release_mirror: dict, kubernetes_version: str) -> list:
    """The binaries the workers stage installs, straight from the test mirror's release files."""
    from mirror.tarballs import tar_members
    from standins import build

    from khwtui.artifacts.render import NodeFile
    from khwtui.artifacts.workers_files import (
        CNI_FILES,
        CONTAINERD_FILES,
        KUBERNETES_FILES,
        RUNC_BINARY,
    )

    tree = release_mirror["tree"]

    def data(component: str) -> bytes:
        return (tree.root / tree.artifacts[component].path).read_bytes()

    found = tar_members(data("containerd"), CONTAINERD_FILES) | tar_members(data("cni_plugins"), CNI_FILES)
    found[RUNC_BINARY] = data("runc")
    found |= {path: build(kubernetes_version) for path in KUBERNETES_FILES.values()}
    return [NodeFile(path, content, 0o755) for path, content in found.items()]


def assert_placed_as_rendered(node: NodeShell, files: list[NodeFile]) -> None:
    """Every file is on the node with exactly the rendered bytes, mode and owner."""
    seen = stat_files(node, [f.path for f in files])
    wanted = {f.path: f"{hashlib.sha256(f.content).hexdigest()} {f.mode:o} {f.owner} {f.group}" for f in files}
    differ = {path: (seen[path], want) for path, want in wanted.items() if seen[path] != want}
    assert not differ, f"{node.name}: placed files differ from the rendered ones: {differ}"


def pod_cidr_contains(cidr: str, address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address) in ipaddress.ip_network(cidr)


@contextmanager
def standin_nodes(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict, folder: str) -> Iterator[LocalCluster]:
    """A local 1 + 2 (+ lb) cluster's nodes, made with `up --only compute` from the worker apt
    repository, the stand-ins' python3 on all but the lb; `down` afterwards."""
    import janitor
    from localcluster import LocalCluster, local_config

    apt = worker_apt_repo(tmp_path_factory.getbasetemp() / "worker-apt")
    cluster = LocalCluster(tmp_path_factory.mktemp(folder) / "c", local_config(f"t{janitor.new_prefix()}", 1, 2, release_mirror), apt=apt)
    try:
        done = cluster.khwtui("up", "--auto", "--only", "compute")
        assert done.returncode == 0, done.stdout + done.stderr
        install_standin_runtime([node for name, node in shells(cluster.state_dir).items() if name != "lb"])
        yield cluster
    finally:
        cluster.down()


@cache
def worker_apt_repo(root: Path):
    """The test apt repository with iptables added (CNI's ipMasq and kube-proxy need it; the node
    root lacks it), built once per session."""
    from mirror import default_cache
    from mirror.aptrepo import NODE_PACKAGES, build_apt_repo

    return build_apt_repo(root, default_cache(), [*NODE_PACKAGES, "iptables"])
