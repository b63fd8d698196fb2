"""The `local` provider: one systemd-nspawn machine per node on this Linux host (needs root).

Each node boots real systemd and sshd in its own network namespace on a bridge in the node CIDR,
on an overlay over one cached Debian root (providers/rootfs.py). The bridge's address, the node
CIDR's first host, is the operator's side: khwtui reaches the nodes from the root namespace.
Every host object carries a per-cluster prefix; `down` removes exactly those and ends only the
processes this provider started, by PID. A node's disk (its overlay upper dir) lives in the
state folder, so nodes survive khwtui restarts and a host reboot boots them again as they were.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from khwtui.artifacts.render import NodeFile, render
from khwtui.core.errors import StateError, UserError
from khwtui.core.fsutil import write_atomic
from khwtui.model.config import Config
from khwtui.model.topology import Node, Topology
from khwtui.providers import nspawn, rootfs
from khwtui.providers.base import LogFn, NodeEndpoint, Plan, PlannedResource, PreflightError
from khwtui.providers.host_tunables import KUBELET_TUNABLES, HostTunables
from khwtui.providers.nspawn import PREFIX, BootSpec, HostError, HostObject, Names
from khwtui.transport.remote import offered_host_key

RUNTIME_FILE = "runtime.toml"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
APT_KEYRING = "/etc/apt/keyrings/khwtui"
NODE_BYTES = 256 * 2**20  # a booted node's upper dir is ~1 MB; etcd and containerd add the rest
BOOT_TIMEOUT = 120.0  # per node, all booting at once on 2 cores
INIT_TIMEOUT = 15.0
POWEROFF_TIMEOUT = 90.0  # systemd's own default stop timeout is 90 s per unit
SCAN_TIMEOUT = 3.0
POLL_INTERVAL = 0.2
CONSOLE_TAIL = 5
TOOLS = {
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "iptables": "iptables",
    "nsenter": "util-linux",
    "mount": "mount",
    "chroot": "coreutils",
}
NO_BILL = 0.0


def cluster_prefix(cluster_name: str, state_dir: Path) -> str:
    """Short (8 chars, so interface names stay within 15) and distinct per cluster and state folder."""
    digest = hashlib.sha256(f"{cluster_name}\0{Path(state_dir).resolve()}".encode()).hexdigest()
    return "kh" + digest[:6]


@dataclass
class NodeRuntime:
    nspawn_pid: int
    init_pid: int
    mount: str


@dataclass
class Runtime:
    """state_dir/local/runtime.toml: what this provider started, so `down` can end exactly that."""

    prefix: str
    rootfs: str = ""
    ip_forward_before: str = ""  # set when outbound made us turn forwarding on
    nodes: dict[str, NodeRuntime] = field(default_factory=dict)


class LocalProvider:
    kind = "local"

    def __init__(
        self,
        config: Config,
        topo: Topology,
        state_dir: Path,
        client_public_key: str,
        *,
        prefix: str | None = None,
        cache_dir: Path | None = None,
        tunables: HostTunables | None = None,
    ) -> None:
        self.config = config
        self.topo = topo
        self.names = Names(prefix or cluster_prefix(config.cluster.name, state_dir))
        if not PREFIX.match(self.names.prefix):
            raise UserError(f"local prefix {self.names.prefix!r} must be 3-10 lower-case letters and digits, starting with a letter")
        self.dir = Path(state_dir) / "local"
        self.client_public_key = client_public_key.strip()
        self.cache_base = cache_dir or rootfs.default_cache_dir()
        self.tunables = tunables or HostTunables()
        net = ipaddress.IPv4Network(config.network.node_cidr)
        self.node_cidr = str(net)
        self.prefixlen = net.prefixlen
        self.bridge_address = f"{net.network_address + 1}/{net.prefixlen}"
        self.gateway = str(net.network_address + 1)

    # --- plan and preflight ---------------------------------------------------------------

    def plan(self) -> Plan:
        mirror = self._mirror()
        resources = [self._root_resource(mirror), PlannedResource("link", self.names.bridge, f"bridge, operator address {self.bridge_address}")]
        resources += self._chain_resources()
        resources += self._tunable_resources()
        for node in self.topo.nodes:
            machine = self.names.machine(node.name)
            resources += [
                PlannedResource("netns", machine, f"{node.name} at {node.internal_ip}"),
                PlannedResource("link", self.names.veth(node.name), f"veth to {machine} on {self.names.bridge}"),
                PlannedResource("mount", str(self._node_dir(node.name) / "root"), "overlay over the node root"),
                PlannedResource("machine", machine, f"systemd-nspawn --boot, {node.role}"),
            ]
        notes = (f"Debian mirror: {mirror.uri or 'none found'} (from {mirror.origin})", "needs root; no cloud bill")
        return Plan(tuple(resources), NO_BILL, notes)

    def _root_resource(self, mirror: rootfs.Mirror) -> PlannedResource:
        if mirror.uri is None:
            return PlannedResource("node-root", str(self.cache_base), "no Debian mirror: set local.debian_mirror")
        cache = rootfs.RootfsCache(self.cache_base, mirror.uri)
        detail = "cached" if cache.ready() else f"debootstrap {rootfs.SUITE} from {mirror.uri}"
        return PlannedResource("node-root", str(cache.path), detail)

    def _tunable_resources(self) -> list[PlannedResource]:
        """The host's kernel settings the nodes' kubelets need and cannot set from inside a node."""
        return [PlannedResource("sysctl", key, f"{now} -> {KUBELET_TUNABLES[key]} on this host: the nodes share its kernel and "
                                                "their kubelets need it; down restores it")
                for key, now in self.tunables.to_change().items()]

    def _chain_resources(self) -> list[PlannedResource]:
        outbound = self.config.local.outbound
        guard = "node traffic stays on the bridge" + (", outbound allowed" if outbound else "")
        chains = [PlannedResource("chain", f"filter/{self.names.guard_chain}", guard)]
        if outbound:
            chains.append(PlannedResource("chain", f"nat/{self.names.nat_chain}", f"MASQUERADE {self.node_cidr} leaving the host"))
        return chains

    async def preflight(self) -> None:
        problems = self._tool_problems()
        mirror = self._mirror()
        if mirror.uri is None:
            problems.append(f"no Debian mirror in {mirror.origin}; fix: set local.debian_mirror to a Debian mirror URL")
        elif not self._root_available(mirror.uri):
            problems += self._build_problems()
        problems += self._state_dir_problems()
        problems += self._name_problems()
        if shutil.which("ip") and not nspawn.link_exists(self.names.bridge):
            taken = nspawn.routes_overlapping(self.node_cidr, self.names.bridge)
            if taken:
                problems.append(f"network.node_cidr {self.node_cidr} is already routed on this host ({', '.join(taken)}); fix: choose another network.node_cidr")
        if problems:
            raise PreflightError(problems)

    def _tool_problems(self) -> list[str]:
        problems = []
        if os.geteuid() != 0:
            problems.append("the local provider needs root (namespaces, mounts, systemd-nspawn); fix: run khwtui as root, e.g. with sudo")
        for tool, package in TOOLS.items():
            if not shutil.which(tool):
                problems.append(f"{tool} is missing; fix: apt-get install {package}")
        return problems

    def _root_available(self, mirror: str) -> bool:
        recorded = self._load().rootfs
        return bool(recorded and Path(recorded).is_dir()) or rootfs.RootfsCache(self.cache_base, mirror).ready()

    def _build_problems(self) -> list[str]:
        problems = []
        if not shutil.which("debootstrap"):
            problems.append("debootstrap is missing (the node root is not built yet); fix: apt-get install debootstrap")
        free = shutil.disk_usage(_existing_parent(self.cache_base)).free
        if free < rootfs.ROOTFS_BYTES:
            problems.append(
                f"{self.cache_base} has {free // 2**20} MiB free, the node root needs {rootfs.ROOTFS_BYTES // 2**20} MiB;"
                " fix: free disk space or point XDG_CACHE_HOME at a larger disk"
            )
        return problems

    def _state_dir_problems(self) -> list[str]:
        problems = []
        parent = _existing_parent(self.dir)
        need = NODE_BYTES * len(self.topo.nodes)
        free = shutil.disk_usage(parent).free
        if free < need:
            problems.append(f"{parent} has {free // 2**20} MiB free, {len(self.topo.nodes)} nodes need {need // 2**20} MiB; fix: free disk space or use another --state-dir")
        if nspawn.mount_of(parent).fstype == "overlay":
            problems.append(f"the state folder {self.dir} is on overlayfs, which cannot hold the nodes' overlay upper dirs; fix: use a --state-dir on ext4, xfs or tmpfs")
        return problems

    def _name_problems(self) -> list[str]:
        problems = []
        for node in self.topo.nodes:
            if len(self.names.machine(node.name)) > nspawn.MACHINE_NAME_MAX:
                problems.append(f"topology.name_prefix: machine name {self.names.machine(node.name)!r} is longer than {nspawn.MACHINE_NAME_MAX}; fix: use a shorter topology.name_prefix")
        veths = [self.names.veth(n.name) for n in self.topo.nodes]
        if len(set(veths)) != len(veths):
            problems.append("two node names hash to the same veth name; fix: change topology.name_prefix")
        return problems

    # --- ensure -------------------------------------------------------------------------------

    async def ensure(self, log: LogFn) -> list[NodeEndpoint]:
        await self.preflight()
        runtime = self._load()
        before = dataclasses.replace(runtime, nodes=dict(runtime.nodes))
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the nodes' disks hold their private host keys
        root = await self._node_root(runtime, log)
        actions = await asyncio.to_thread(self._ensure_network, runtime)
        actions += await asyncio.to_thread(self.tunables.hold, self.names.prefix)  # before any kubelet starts
        results = await asyncio.gather(*(asyncio.to_thread(self._ensure_node, n, root, runtime.nodes.get(n.name)) for n in self.topo.nodes))
        for node, (node_runtime, node_actions) in zip(self.topo.nodes, results, strict=True):
            runtime.nodes[node.name] = node_runtime
            actions += [f"{node.name}: {action}" for action in node_actions]
        runtime.rootfs = str(root)
        if runtime != before:
            self._save(runtime)
        for line in actions or [f"all {len(self.topo.nodes)} nodes already running"]:
            log(line)
        await asyncio.gather(*(self._wait_ready(n, runtime.nodes[n.name]) for n in self.topo.nodes))
        log(f"{len(self.topo.nodes)} nodes answer ssh with their pinned host keys")
        return [self._endpoint(n) for n in self.topo.nodes]

    async def _node_root(self, runtime: Runtime, log: LogFn) -> Path:
        """The root the nodes' upper dirs were made over, else the cached (or freshly built) one."""
        if runtime.rootfs and Path(runtime.rootfs).is_dir():  # noqa: ASYNC240 - one stat of a local path
            return Path(runtime.rootfs)
        mirror = self._mirror()
        assert mirror.uri is not None  # preflight made sure
        return await rootfs.ensure_rootfs(rootfs.RootfsCache(self.cache_base, mirror.uri), log)

    def _ensure_network(self, runtime: Runtime) -> list[str]:
        actions = []
        if nspawn.ensure_bridge(self.names.bridge, self.bridge_address):
            actions.append(f"bridge {self.names.bridge} at {self.bridge_address}")
        guard = nspawn.guard_rules(self.names.bridge, self.config.local.outbound)
        if nspawn.ensure_chain("filter", self.names.guard_chain, guard):
            actions.append(f"guard rules in iptables chain {self.names.guard_chain}")
        if self.config.local.outbound:
            if nspawn.ensure_chain("nat", self.names.nat_chain, nspawn.nat_rules(self.names.bridge, self.node_cidr)):
                actions.append(f"outbound NAT in iptables chain {self.names.nat_chain}")
            if nspawn.read_ip_forward() != "1":
                runtime.ip_forward_before = nspawn.read_ip_forward()
                nspawn.write_ip_forward("1")
                actions.append("turned on IPv4 forwarding for outbound traffic")
        elif self.names.nat_chain in nspawn.chains("nat"):
            nspawn.delete_chain("nat", self.names.nat_chain)
            actions.append(f"outbound is off: deleted iptables chain {self.names.nat_chain}")
        return actions

    def _ensure_node(self, node: Node, root: Path, recorded: NodeRuntime | None) -> tuple[NodeRuntime, list[str]]:
        """Adopt the running node, or make what is missing and boot it; runs in a thread."""
        folder = self._node_dir(node.name)
        machine = self.names.machine(node.name)
        running = self._running_pid(machine, recorded)
        if running:
            return NodeRuntime(running, nspawn.init_pid(running) or 0, str(folder / "root")), []
        actions = []
        for sub in ("upper", "work", "root", "containerd"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        if nspawn.mount_overlay(machine, root, folder / "upper", folder / "work", folder / "root"):
            actions.append(f"overlay mounted at {folder / 'root'}")
        if not self._host_key_path(node.name).exists():
            self._customise(node, folder / "root")
            actions.append(f"created: hostname, {self.config.ssh.user} with sudo and the cluster key, own host key")
        if nspawn.ensure_node_net(self.names, node.name, f"{node.internal_ip}/{self.prefixlen}", self.gateway):
            actions.append(f"network namespace {machine}, {node.internal_ip} on {self.names.bridge}")
        spec = BootSpec(machine, folder / "root", machine, folder / "containerd", folder / "console.log", self._machine_uuid(node.name))
        pid = nspawn.boot(spec)
        init = nspawn.wait_init(pid, _deadline(INIT_TIMEOUT))
        actions.append(f"booted (systemd-nspawn pid {pid}, init pid {init})")
        return NodeRuntime(pid, init, str(folder / "root")), actions

    def _running_pid(self, machine: str, recorded: NodeRuntime | None) -> int | None:
        """The node's nspawn PID if it runs: the recorded one, else found by its machine name."""
        if recorded and nspawn.owns(recorded.nspawn_pid, machine):
            return recorded.nspawn_pid
        found = [m.pid for m in nspawn.machine_processes(re.escape(self.names.prefix)) if m.name == machine]
        return found[0] if found else None

    def _machine_uuid(self, node: str) -> str:
        """A stable machine-id per node, so journals and identities survive a reboot."""
        digest = hashlib.sha256(f"{self.names.prefix}/{node}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    # --- per-node files -----------------------------------------------------------------------

    def node_files(self, node: Node) -> list[NodeFile]:
        """The files that make the shared root this node (placed once, before its first boot)."""
        user = self.config.ssh.user
        files = [
            NodeFile("/etc/hostname", render("local-hostname.j2", name=node.name).encode()),
            NodeFile("/etc/hosts", render("local-hosts.j2", node=node).encode()),
            NodeFile("/etc/ssh/sshd_config.d/khwtui.conf", render("local-sshd.conf.j2", port=self.config.ssh.port).encode()),
            NodeFile("/etc/sudoers.d/khwtui", render("local-sudoers.j2", user=user).encode(), 0o440),
            NodeFile(
                f"{_home(user)}/.ssh/authorized_keys",
                render("local-authorized_keys.j2", client_public_key=self.client_public_key).encode(),
                0o600,
                user,
                user,
            ),
        ]
        local = self.config.local
        if local.apt_mirror:
            key = Path(local.apt_key).read_bytes()
            keyring = APT_KEYRING + (".asc" if key.lstrip().startswith(b"-----BEGIN") else ".gpg")
            sources = render("local-apt.sources.j2", uri=local.apt_mirror, suite=rootfs.SUITE, keyring=keyring)
            files += [NodeFile(keyring, key), NodeFile("/etc/apt/sources.list.d/khwtui.sources", sources.encode())]
        return files

    def _customise(self, node: Node, root: Path) -> None:
        user = self.config.ssh.user
        if _id_of(root, "passwd", user) is None:
            nspawn.run("chroot", str(root), "useradd", "--create-home", "--home-dir", _home(user), "--shell", "/bin/bash", "--password", "*", user)
        ssh_dir = _inside(root, f"{_home(user)}/.ssh")
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(ssh_dir, *_ids(root, user, user))
        for file in self.node_files(node):
            _place(root, file)
        if self.config.local.apt_mirror:
            _inside(root, "/etc/apt/sources.list").unlink(missing_ok=True)  # the node's only source is apt_mirror
        self._write_host_key(node.name, root)  # last: its presence marks the node as made

    def _write_host_key(self, node: str, root: Path) -> None:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
        public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
        path = _inside(root, HOST_KEY)
        write_atomic(path, private, 0o600)
        write_atomic(path.with_name(path.name + ".pub"), f"{public} root@{node}\n".encode(), 0o644)  # never half a key

    def _host_key_path(self, node: str) -> Path:
        return _inside(self._node_dir(node) / "upper", HOST_KEY + ".pub")

    def host_key(self, node: str) -> str:
        """The node's pinned public host key, "ssh-ed25519 AAAA..." (read from its own disk)."""
        return " ".join(self._host_key_path(node).read_text().split()[:2])

    # --- readiness ----------------------------------------------------------------------------

    async def _wait_ready(self, node: Node, runtime: NodeRuntime) -> None:
        """Poll until sshd answers with the pinned key and systemd says `running`."""
        expected = self.host_key(node.name)
        deadline = _deadline(BOOT_TIMEOUT)
        waiting_for = "sshd to answer"
        while True:
            if not nspawn.alive(runtime.nspawn_pid):
                raise HostError(f"{node.name} stopped while booting; console: {self._console_tail(node.name)}")
            key = await offered_host_key(node.internal_ip, self.config.ssh.port, ["ssh-ed25519"], SCAN_TIMEOUT)
            if key is not None and key != expected:
                raise HostError(f"{node.internal_ip}:{self.config.ssh.port} answers with host key {key}, not {node.name}'s pinned {expected}")
            init = nspawn.init_pid(runtime.nspawn_pid)
            if key == expected and init:
                state = await _nsenter(init, "systemctl", "is-system-running")
                if state == "running":
                    return
                if state == "degraded":
                    failed = await _nsenter(init, "systemctl", "--failed", "--no-legend", "--plain")
                    raise HostError(f"{node.name} booted with failed units: {' | '.join(failed.splitlines())}")
                waiting_for = f"systemd ({state or 'no answer'})"
            if time.monotonic() > deadline:
                raise HostError(f"{node.name} is not ready after {BOOT_TIMEOUT:.0f} s: still waiting for {waiting_for}")
            await asyncio.sleep(POLL_INTERVAL)

    def _console_tail(self, node: str) -> str:
        path = self._node_dir(node) / "console.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return " | ".join(lines[-CONSOLE_TAIL:]) or "(empty)"

    # --- what exists --------------------------------------------------------------------------

    async def nodes(self) -> list[NodeEndpoint]:
        """The nodes whose machine runs now (one that died is booted again by ensure())."""
        runtime = self._load()
        running = []
        for node in self.topo.nodes:
            machine = self.names.machine(node.name)
            if self._host_key_path(node.name).exists() and self._running_pid(machine, runtime.nodes.get(node.name)):
                running.append(self._endpoint(node))
        return running

    def _endpoint(self, node: Node) -> NodeEndpoint:
        return NodeEndpoint(node.name, node.role, node.internal_ip, None, node.internal_ip, self.config.ssh.port, self.host_key(node.name))

    def api_address(self) -> str | None:
        return self.topo.api_address

    # --- power ----------------------------------------------------------------------------------

    def stop_notes(self) -> list[str]:
        return [f"{len(self.topo.nodes)} nodes power off; their disks under {self.dir} stay, and `khwtui start` boots them again"]

    async def stop(self, log: LogFn) -> None:
        """Power every node off (its systemd shuts down cleanly); disks, network and mounts stay."""
        runtime = self._load()
        lines = await asyncio.gather(*(asyncio.to_thread(self._power_off, n.name, runtime.nodes.get(n.name)) for n in self.topo.nodes))
        for line in lines:
            log(line)

    def _power_off(self, node: str, recorded: NodeRuntime | None) -> str:
        machine = self.names.machine(node)
        pid = self._running_pid(machine, recorded)
        if pid is None:
            return f"{node}: already off"
        return f"{node}: {nspawn.power_off(pid, machine, _deadline(POWEROFF_TIMEOUT))}"

    async def start(self, log: LogFn) -> list[NodeEndpoint]:
        """Boot the nodes that are off (ensure() boots exactly those) and wait until they answer ssh."""
        return await self.ensure(log)

    # --- teardown -----------------------------------------------------------------------------

    def teardown_plan(self) -> list[PlannedResource]:
        plan = [PlannedResource(o.kind, _object_name(o), f"pid {o.pid}" if o.pid else "") for o in self._host_objects()]
        if self.tunables.held_by(self.names.prefix):
            plan.append(PlannedResource("sysctl", ", ".join(KUBELET_TUNABLES), "restored to their values before khwtui if no other local cluster is on this host"))
        if self.dir.exists():
            plan.append(PlannedResource("folder", str(self.dir), "the nodes' disks and the runtime record"))
        return plan

    async def teardown(self, log: LogFn) -> None:
        lines: list[str] = []
        runtime = self._load()
        await asyncio.to_thread(self._teardown, runtime, lines.append)
        for line in lines:
            log(line)

    def _teardown(self, runtime: Runtime, log: LogFn) -> None:
        nspawn.remove(self._host_objects(), log)
        # a cluster holds the settings while anything of it is on the host: a running machine alone
        # would miss one whose nodes are booting (it holds them first) or restarting
        present = {o.prefix for o in nspawn.discover(nspawn.PREFIX_PATTERN)}
        for line in self.tunables.release(self.names.prefix, present):
            log(line)
        if runtime.ip_forward_before and not _other_outbound_clusters():
            nspawn.write_ip_forward(runtime.ip_forward_before)
            log(f"IPv4 forwarding back to {runtime.ip_forward_before}")
        if self.dir.exists():
            nspawn.unmount_under(self.dir)
            shutil.rmtree(self.dir)
            log(f"deleted {self.dir}")

    def _host_objects(self) -> list[HostObject]:
        """This cluster's host objects: found by its exact prefix, plus recorded machines still running."""
        found = nspawn.discover(re.escape(self.names.prefix))
        pids = {o.pid for o in found if o.kind == "machine"}
        for name, node in self._load().nodes.items():
            machine = self.names.machine(name)
            if node.nspawn_pid not in pids and nspawn.owns(node.nspawn_pid, machine):
                found.append(HostObject("machine", machine, self.names.prefix, pid=node.nspawn_pid))
        return found

    # --- the runtime record -------------------------------------------------------------------

    def _node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    def _mirror(self) -> rootfs.Mirror:
        return rootfs.resolve_mirror(self.config.local.debian_mirror)

    def _load(self) -> Runtime:
        path = self.dir / RUNTIME_FILE
        if not path.exists():
            return Runtime(self.names.prefix)
        try:
            raw = tomllib.loads(path.read_text())
            nodes = {name: NodeRuntime(**entry) for name, entry in raw.pop("nodes", {}).items()}
            runtime = Runtime(**raw, nodes=nodes)
        except (tomllib.TOMLDecodeError, TypeError) as exc:
            raise StateError(f"{path} is unreadable ({exc}); fix: run `khwtui down` or delete the folder {self.dir}") from None
        if runtime.prefix != self.names.prefix:
            raise StateError(f"{path} belongs to prefix {runtime.prefix}, not {self.names.prefix}; fix: use the state folder and cluster name it was made with")
        return runtime

    def _save(self, runtime: Runtime) -> None:
        path = self.dir / RUNTIME_FILE
        temp = path.with_name(f".{RUNTIME_FILE}.{os.getpid()}.tmp")
        with open(temp, "wb") as out:
            tomli_w.dump(dataclasses.asdict(runtime), out)
            out.flush()
            os.fsync(out.fileno())
        temp.replace(path)


# --- helpers ------------------------------------------------------------------------------------


def _deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _inside(root: Path, absolute: str) -> Path:
    """A path inside the node root that cannot resolve outside it (no symlink escapes)."""
    path = root / absolute.lstrip("/")
    real_root = root.resolve()
    if not path.parent.resolve().is_relative_to(real_root):
        raise HostError(f"{absolute} leaves the node root {root}")
    return path


def _place(root: Path, file: NodeFile) -> None:
    path = _inside(root, file.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, file.content, file.mode)
    os.chown(path, *_ids(root, file.owner, file.group))


def _ids(root: Path, owner: str, group: str) -> tuple[int, int]:
    """(uid, gid) from the node root's own passwd and group files, not the host's."""
    uid, gid = _id_of(root, "passwd", owner), _id_of(root, "group", group)
    if uid is None or gid is None:
        raise HostError(f"{owner}:{group} is not in the node root's /etc/passwd and /etc/group")
    return uid, gid


def _id_of(root: Path, database: str, name: str) -> int | None:
    for line in _inside(root, f"/etc/{database}").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    return None


def _home(user: str) -> str:
    return f"/home/{user}"


def _object_name(obj: HostObject) -> str:
    return f"{obj.table}/{obj.name}" if obj.kind == "chain" else obj.name


def _other_outbound_clusters() -> bool:
    """Whether another cluster's outbound NAT still needs IPv4 forwarding."""
    return any(re.fullmatch(rf"{nspawn.PREFIX_PATTERN}-nat", chain) for chain in nspawn.chains("nat"))


async def _nsenter(init_pid: int, *argv: str) -> str:
    """Run a command in the node's namespaces from the host (no ssh needed); its stdout."""
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--target={init_pid}", "--mount", "--uts", "--ipc", "--net", "--pid", *argv,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return out.decode(errors="replace").strip()
