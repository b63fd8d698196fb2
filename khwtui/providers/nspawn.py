"""Host-side primitives for local nodes: bridge, network namespaces, veths, guard rules, overlay
mounts, systemd-nspawn boot, and killing a node by PID.

Every host object is named from a short per-cluster prefix, so `discover()` finds exactly one
cluster's objects (or one family's, for the test janitor) and `remove()` deletes nothing else.
Everything here is synchronous and quick; async callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from khwtui.core.errors import OperationError

PREFIX_PATTERN = r"[a-z][a-z0-9]{2,9}"  # 10 + "br" or + 5 hex stays within IFNAMSIZ (15)
PREFIX = re.compile(rf"^{PREFIX_PATTERN}$")
NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NSPAWN = "systemd-nspawn"
MACHINE_NAME_MAX = 64
CHAIN_PARENTS = {"filter": "FORWARD", "nat": "POSTROUTING"}
REMOVAL_ORDER = ("machine", "cgroup", "mount", "netns", "link", "chain")
KILL_DEADLINE = 15.0
IFF_UP = 0x1
ROUTE_TYPES = ("unicast", "local", "broadcast", "multicast", "blackhole", "unreachable", "prohibit", "throw", "anycast")
POLL = 0.05


class HostError(OperationError):
    """A host command failed while making or removing local nodes."""


@dataclass(frozen=True)
class Names:
    """Every host name a cluster uses, derived from its prefix."""

    prefix: str

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def guard_chain(self) -> str:
        return f"{self.prefix}-guard"

    @property
    def nat_chain(self) -> str:
        return f"{self.prefix}-nat"

    def machine(self, node: str) -> str:
        """The nspawn machine name, also the netns name and the overlay mount's source."""
        return f"{self.prefix}-{node}"

    def veth(self, node: str) -> str:
        """The host end of the node's veth: fixed length, stable whatever the node count."""
        return self.prefix + hashlib.sha256(node.encode()).hexdigest()[:5]


@dataclass(frozen=True)
class HostObject:
    """One host object found by prefix. `name`: machine, cgroup path, mount target, netns, link or chain."""

    kind: str  # machine | cgroup | mount | netns | link | chain
    name: str
    prefix: str
    pid: int = 0  # machine: the systemd-nspawn process
    table: str = ""  # chain: its iptables table


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    fstype: str
    root: str = "/"
    options: str = ""  # the superblock's options (for cgroup v1: its controllers)


@dataclass(frozen=True)
class BootSpec:
    """What one `systemd-nspawn --boot` needs (docs/UPSTREAM.md "systemd-nspawn nodes")."""

    machine: str
    root: Path
    netns: str
    containerd_dir: Path
    console_log: Path
    uuid: str


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise HostError(f"`{shlex.join(argv)}` failed ({proc.returncode}): {detail[-1] if detail else 'no output'}")
    return proc


# --- network ----------------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return (SYS_NET / name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def _has_address(link: str, address: str, netns: str | None = None) -> bool:
    where = ("-n", netns) if netns else ()
    out = run("ip", *where, "-4", "-o", "addr", "show", "dev", link, check=False).stdout
    return f" {address} " in out


def ensure_bridge(name: str, address: str) -> bool:
    """The bridge with the operator address (the node CIDR's first host, e.g. 10.240.0.1/24)."""
    changed = False
    if not link_exists(name):
        run("ip", "link", "add", name, "type", "bridge")
        changed = True
    if not _has_address(name, address):
        run("ip", "addr", "replace", address, "dev", name)
        changed = True
    if not _is_up(name):
        run("ip", "link", "set", name, "up")
        changed = True
    return changed


def _is_up(link: str) -> bool:
    return int((SYS_NET / link / "flags").read_text(), 16) & IFF_UP == IFF_UP


def ensure_node_net(names: Names, node: str, address: str, gateway: str) -> bool:
    """The node's netns with eth0 (its veth peer) on the bridge, its address and a default route."""
    netns, veth = names.machine(node), names.veth(node)
    changed = False
    if not netns_exists(netns):
        run("ip", "netns", "add", netns)
        changed = True
    if not link_exists(veth):
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        changed = True
    if changed or not _has_address("eth0", address, netns):
        run("ip", "link", "set", veth, "master", names.bridge, "up")
        run("ip", "-n", netns, "link", "set", "lo", "up")
        run("ip", "-n", netns, "addr", "replace", address, "dev", "eth0")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        run("ip", "-n", netns, "route", "replace", "default", "via", gateway)
        # nsenter, not `ip netns exec`: that one remounts /sys without the cgroup mounts.
        run("nsenter", f"--net={NETNS_DIR / netns}", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        changed = True
    return changed


def routes_overlapping(cidr: str, ignore_dev: str) -> list[str]:
    """Host routes (other than on `ignore_dev`) that overlap `cidr`: another network already uses it."""
    wanted = ipaddress.IPv4Network(cidr)
    found = []
    for line in run("ip", "-4", "-o", "route", "show", check=False).stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in ROUTE_TYPES:
            fields = fields[1:]
        dest = fields[0] if fields else "default"
        dev = fields[fields.index("dev") + 1] if "dev" in fields else ""
        if dev == ignore_dev or dest == "default":
            continue
        try:
            net = ipaddress.IPv4Network(dest, strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0 and net.overlaps(wanted):
            found.append(f"{dest} on {dev}")
    return found


def read_ip_forward() -> str:
    return IP_FORWARD.read_text().strip()


def write_ip_forward(value: str) -> None:
    IP_FORWARD.write_text(value + "\n")


# --- guard rules --------------------------------------------------------------------------------


def guard_rules(bridge: str, outbound: bool) -> list[list[str]]:
    """Node traffic stays on the bridge; with `outbound`, nodes may also start connections out."""
    rules = [["-i", bridge, "-o", bridge, "-j", "ACCEPT"]]
    if outbound:
        rules += [
            ["-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"],
            ["-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ]
    return rules + [["-i", bridge, "-j", "DROP"], ["-o", bridge, "-j", "DROP"]]


def nat_rules(bridge: str, node_cidr: str) -> list[list[str]]:
    """Outbound node traffic leaves with the host's address."""
    return [["-s", node_cidr, "!", "-o", bridge, "-j", "MASQUERADE"]]


def _iptables(table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("iptables", "-w", "-t", table, *args, check=check)


def ensure_chain(table: str, chain: str, rules: list[list[str]]) -> bool:
    """The chain holds exactly `rules` and is jumped to first from its parent chain."""
    parent = CHAIN_PARENTS[table]
    changed = False
    listing = _iptables(table, "-S", chain, check=False)
    if listing.returncode != 0:
        _iptables(table, "-N", chain)
        changed = True
    wanted = [shlex.join(["-A", chain, *rule]) for rule in rules]
    have = [line for line in listing.stdout.splitlines() if line.startswith("-A ")]
    if have != wanted:
        _iptables(table, "-F", chain)
        for rule in rules:
            _iptables(table, "-A", chain, *rule)
        changed = True
    if _iptables(table, "-C", parent, "-j", chain, check=False).returncode != 0:
        _iptables(table, "-I", parent, "1", "-j", chain)
        changed = True
    return changed


def delete_chain(table: str, chain: str) -> None:
    """Every jump to the chain, then the chain itself."""
    for line in _iptables(table, "-S").stdout.splitlines():
        words = shlex.split(line)
        if words[:1] == ["-A"] and words[-2:] == ["-j", chain]:
            _iptables(table, "-D", *words[1:])
    _iptables(table, "-F", chain)
    _iptables(table, "-X", chain)


def chains(table: str) -> list[str]:
    if not _have("iptables"):
        return []
    out = _iptables(table, "-S", check=False).stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("-N ")]


def _have(tool: str) -> bool:
    return shutil.which(tool) is not None


# --- mounts -----------------------------------------------------------------------------------


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mounts() -> list[Mount]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, source, options = (right.split() + [""])[:3]
        fields = left.split()
        found.append(Mount(_unescape(source), _unescape(fields[4]), fstype, _unescape(fields[3]), options))
    return found


def mount_of(path: Path) -> Mount:
    """The mount that holds `path` (the longest mount target that is a parent of it)."""
    real = str(path.resolve())
    best = None
    for m in mounts():
        if _within(real, m.target) and (best is None or len(m.target) >= len(best.target)):
            best = m
    assert best is not None  # "/" holds everything
    return best


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def is_mounted(target: Path) -> bool:
    real = str(target.resolve())
    return any(m.target == real for m in mounts())


def _plain_path(path: Path) -> str:
    text = str(path.resolve())
    if any(c in text for c in ",:\n"):
        raise HostError(f"{text} contains ',' or ':', which overlayfs and nspawn options cannot carry; use another --state-dir or cache folder")
    return text


def mount_overlay(source: str, lower: Path, upper: Path, work: Path, target: Path) -> bool:
    if is_mounted(target):
        return False
    options = f"lowerdir={_plain_path(lower)},upperdir={_plain_path(upper)},workdir={_plain_path(work)}"
    run("mount", "-t", "overlay", source, "-o", options, str(target))
    return True


def unmount_under(path: Path) -> list[str]:
    """Unmount everything at or below `path`, deepest first (e.g. before deleting the folder)."""
    real = str(path.resolve())
    targets = sorted((m.target for m in mounts() if _within(m.target, real)), key=len, reverse=True)
    for target in targets:
        run("umount", target)
    return targets


# --- cgroups ------------------------------------------------------------------------------------
# With --keep-unit, nspawn puts the node in "<its own cgroup>/payload". Nodes started from one
# cgroup would share that tree and their systemds would remove each other's unit cgroups, so
# each node's nspawn starts in a cgroup of its own, named after the machine, in every hierarchy.


def _cgroup_key(controllers: Iterable[str]) -> frozenset[str]:
    return frozenset(c for c in controllers if c)


def _own_cgroups() -> dict[frozenset[str], str]:
    """Our cgroup path per hierarchy, keyed by its controllers (cgroup2: the empty set)."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[_cgroup_key(controllers.split(","))] = path
    return own


def _cgroup_mounts() -> dict[frozenset[str], Mount]:
    known = {line.split()[0] for line in Path("/proc/cgroups").read_text().splitlines()[1:] if line.strip()}
    found: dict[frozenset[str], Mount] = {}
    for m in mounts():
        if m.fstype == "cgroup2":
            found.setdefault(frozenset(), m)
        elif m.fstype == "cgroup":
            found.setdefault(_cgroup_key(o for o in m.options.split(",") if o in known or o.startswith("name=")), m)
    return found


def node_cgroups(machine: str) -> list[Path]:
    """The node's own cgroup in every mounted hierarchy, beside the one we run in."""
    own = _own_cgroups()
    dirs = []
    for key, m in _cgroup_mounts().items():
        if key in own:
            relative = os.path.relpath(own[key], m.root)
            dirs.append(Path(m.target) / ("" if relative == "." else relative) / machine)
    return dirs


def make_cgroups(dirs: list[Path]) -> None:
    for path in dirs:
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset starts empty and refuses tasks
            file = path / name
            if file.exists() and not file.read_text().strip():
                file.write_text((path.parent / name).read_text())


def remove_cgroup(path: Path) -> None:
    """Remove a node's cgroup tree bottom-up once its processes are gone."""
    for dirpath, _, _ in os.walk(path, topdown=False):  # children first
        deadline = time.monotonic() + KILL_DEADLINE
        while True:
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY while the last tasks are being released
                if time.monotonic() > deadline:
                    raise HostError(f"cgroup {dirpath} is still busy; a process of the node survived") from None
                time.sleep(POLL)


def cgroups_named(prefix_pattern: str) -> list[HostObject]:
    named = re.compile(rf"^(?P<prefix>{prefix_pattern})-.+$")
    found = []
    for m in _cgroup_mounts().values():
        for dirpath, dirnames, _ in os.walk(m.target):
            for name in list(dirnames):
                match = named.match(name)
                if match:
                    found.append(HostObject("cgroup", os.path.join(dirpath, name), match["prefix"]))
                    dirnames.remove(name)
    return found


# --- processes ----------------------------------------------------------------------------------


def _proc(pid: int, name: str) -> str:
    """A /proc/PID file's text, or "" once the process is gone."""
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    return _proc(pid, "cmdline").split("\0")[:-1]


def _stat(pid: int) -> list[str]:
    text = _proc(pid, "stat")
    return text[text.rindex(")") + 2 :].split() if text else []  # after "(comm)": state, ppid, ...


def alive(pid: int) -> bool:
    """Running and not a zombie; a zombie child of ours is reaped on the way."""
    state = _stat(pid)
    if not state:
        return False
    if state[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def owns(pid: int, machine: str) -> bool:
    """Whether `pid` is the systemd-nspawn running `machine` (guards against PID reuse)."""
    argv = cmdline(pid)
    return bool(argv) and os.path.basename(argv[0]) == NSPAWN and f"--machine={machine}" in argv and alive(pid)


def init_pid(nspawn_pid: int) -> int | None:
    """The node's PID 1 (systemd) as the host sees it: the child of systemd-nspawn that is PID 1
    of its own PID namespace (a short-lived helper child comes first)."""
    for child in _proc(nspawn_pid, f"task/{nspawn_pid}/children").split():
        pids = _ns_pids(int(child))
        if len(pids) >= 2 and pids[-1] == "1":
            return int(child)
    return None


def _ns_pids(pid: int) -> list[str]:
    match = re.search(r"^NSpid:\s+(.*)$", _proc(pid, "status"), re.M)
    return match.group(1).split() if match else []


def machine_processes(prefix_pattern: str) -> list[HostObject]:
    """Running systemd-nspawn processes whose machine name starts with a matching prefix."""
    name_re = re.compile(rf"^--machine=(?P<name>(?P<prefix>{prefix_pattern})-.+)$")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = cmdline(int(entry.name))
        if not argv or os.path.basename(argv[0]) != NSPAWN:
            continue
        for arg in argv:
            match = name_re.match(arg)
            if match and alive(int(entry.name)):
                found.append(HostObject("machine", match["name"], match["prefix"], pid=int(entry.name)))
    return found


def nspawn_argv(spec: BootSpec) -> list[str]:
    return [
        NSPAWN,
        "--quiet",
        "--boot",
        "--keep-unit",  # no host systemd/D-Bus to register with
        "--register=no",
        f"--machine={spec.machine}",
        f"--uuid={spec.uuid}",
        f"--directory={_plain_path(spec.root)}",
        f"--network-namespace-path={NETNS_DIR / spec.netns}",
        "--capability=all",
        "--bind=/dev/kmsg",
        # containerd's snapshots cannot live on the overlay root (overlayfs upper on overlayfs)
        f"--bind={_plain_path(spec.containerd_dir)}:/var/lib/containerd",
        "--system-call-filter=@keyring bpf",
        "--console=passive",
    ]


# Joins the cgroups named before "--", then becomes systemd-nspawn (same PID).
JOIN_AND_EXEC = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs"; shift; done; shift; exec "$@"'


def boot(spec: BootSpec) -> int:
    """Start the node in its own session and cgroups, detached from us; returns the nspawn PID."""
    cgroups = node_cgroups(spec.machine)
    make_cgroups(cgroups)
    argv = ["sh", "-ec", JOIN_AND_EXEC, spec.machine, *map(str, cgroups), "--", *nspawn_argv(spec)]
    env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="network")  # only /proc/sys/net writable
    with open(spec.console_log, "ab") as console:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=console, env=env, start_new_session=True)
    return proc.pid


def wait_init(nspawn_pid: int, deadline: float) -> int:
    """Poll until systemd-nspawn has forked the node's init."""
    while time.monotonic() < deadline:
        pid = init_pid(nspawn_pid)
        if pid:
            return pid
        if not alive(nspawn_pid):
            raise HostError(f"systemd-nspawn (pid {nspawn_pid}) exited before the node started")
        time.sleep(POLL)
    raise HostError(f"systemd-nspawn (pid {nspawn_pid}) started no node init in time")


def kill_machine(pid: int, machine: str) -> bool:
    """SIGKILL the node's init (stops it and every container in it at once), then its nspawn.

    Only if `pid` still is the nspawn of `machine`; returns whether it was.
    """
    if not owns(pid, machine):
        return False
    child = init_pid(pid)
    for target in ([child] if child else []) + [pid]:
        _kill(target)
        deadline = time.monotonic() + KILL_DEADLINE
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL)
        if not alive(pid):
            return True
    raise HostError(f"systemd-nspawn {machine} (pid {pid}) survived SIGKILL")


def power_off(pid: int, machine: str, deadline: float) -> str:
    """Ask the node's systemd to power off (SIGRTMIN+4, its documented poweroff request, which
    systemd-nspawn itself sends) and wait for the machine to end; SIGKILL it only past `deadline`.
    Only if `pid` still is the nspawn of `machine`."""
    if not owns(pid, machine):
        return "not running"
    child = init_pid(pid)
    if child:
        os.kill(child, signal.SIGRTMIN + 4)
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL)
    if not alive(pid):
        return "powered off"
    kill_machine(pid, machine)
    return "did not power off in time: killed"


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- finding and removing a prefix's objects ----------------------------------------------------


def discover(prefix_pattern: str) -> list[HostObject]:
    """Every host object whose name carries a prefix matching `prefix_pattern` (a regex)."""
    named = re.compile(rf"^(?P<prefix>{prefix_pattern})-.+$")
    found = machine_processes(prefix_pattern) + cgroups_named(prefix_pattern)
    for m in mounts():
        match = named.match(m.source)
        if m.fstype == "overlay" and match:
            found.append(HostObject("mount", m.target, match["prefix"]))
    if NETNS_DIR.is_dir():
        for name in sorted(os.listdir(NETNS_DIR)):
            match = named.match(name)
            if match:
                found.append(HostObject("netns", name, match["prefix"]))
    link_re = re.compile(rf"^(?P<prefix>{prefix_pattern})(br|[0-9a-f]{{5}})$")
    for name in sorted(os.listdir(SYS_NET)):
        match = link_re.match(name)
        if match:
            found.append(HostObject("link", name, match["prefix"]))
    chain_re = re.compile(rf"^(?P<prefix>{prefix_pattern})-(guard|nat)$")
    for table in CHAIN_PARENTS:
        for chain in chains(table):
            match = chain_re.match(chain)
            if match:
                found.append(HostObject("chain", chain, match["prefix"], table=table))
    return found


def remove(objects: Iterable[HostObject], log: Callable[[str], None]) -> None:
    """Delete the objects in dependency order; ones already gone are skipped."""
    ordered = sorted(objects, key=lambda o: (REMOVAL_ORDER.index(o.kind), -len(o.name) if o.kind == "mount" else 0))
    for obj in ordered:
        if obj.kind == "machine":
            if kill_machine(obj.pid, obj.name):
                log(f"stopped {obj.name} (pid {obj.pid})")
        elif obj.kind == "cgroup":
            if Path(obj.name).exists():
                remove_cgroup(Path(obj.name))
                log(f"removed cgroup {obj.name}")
        elif obj.kind == "mount":
            if is_mounted(Path(obj.name)):
                run("umount", obj.name)
                log(f"unmounted {obj.name}")
        elif obj.kind == "netns":
            if netns_exists(obj.name):
                run("ip", "netns", "delete", obj.name)
                log(f"deleted network namespace {obj.name}")
        elif obj.kind == "link":
            # A veth goes away by itself once its peer's namespace is deleted, asynchronously:
            # "Cannot find device" after link_exists() said yes means it is gone, which is done.
            if link_exists(obj.name) and run("ip", "link", "delete", obj.name, check=False).returncode == 0:
                log(f"deleted link {obj.name}")
            elif link_exists(obj.name):
                run("ip", "link", "delete", obj.name)
        elif obj.name in chains(obj.table):
            delete_chain(obj.table, obj.name)
            log(f"deleted iptables chain {obj.table}/{obj.name}")
