"""The `machines` provider: Debian or Ubuntu hosts you already have, listed in [[machines.hosts]].

khwtui creates no machine here. It logs in as `ssh.user`, a non-root user with passwordless sudo
that holds the cluster's public key, and trusts each host only by its key: the one pinned in the
config, or, with machines.trust_on_first_use, the one it presents the first time (then pinned in
state like any other). Every host proves its key before anything is sent to any of them; then a
preflight reads what khwtui needs of each (OS and version, architecture, swap on workers, clock,
sudo) and names every problem in one line with its fix. `down` stops and removes exactly what the
stages recorded in state (units and files) and the cluster's block of node names in /etc/hosts,
and leaves the hosts themselves alone.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from khwtui.artifacts import hosts_table
from khwtui.artifacts.sshkey import client_key
from khwtui.core.errors import UsageError
from khwtui.model.config import Config, MachineHost
from khwtui.model.state import NodeRecord, State, StateDir
from khwtui.model.topology import Topology
from khwtui.providers.base import (
    LogFn,
    NodeEndpoint,
    Plan,
    PlannedResource,
    PreflightError,
)
from khwtui.transport.remote import Host, Remote, RemoteError, offered_host_key

SUPPORTED_OS = {"debian": (12,), "ubuntu": (22, 4)}  # ID -> lowest VERSION_ID, as numbers
SUPPORTED_ARCH = ("x86_64",)  # uname -m of amd64, the only release architecture the stages install
MAX_CLOCK_SKEW = 30.0  # seconds; certificates and etcd need roughly the same time everywhere
SCAN_TIMEOUT = 15.0
PREFLIGHT_TIMEOUT = 60
TEARDOWN_TIMEOUT = 300
POWER_REFUSED = ("provider.kind: machines are your own hosts, and khwtui does not power them off or on; "
                 "fix: power them with your own tools (etcd and the units start again at boot)")
KEY_ALGORITHMS = {"ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]}  # key type -> what to ask for
FIRST_USE_ALGORITHMS = ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512"]

# Run as the login user; prints key=value lines (read by preflight_problems).
PREFLIGHT_COMMAND = r""". /etc/os-release
echo "os=$ID"
echo "version=$VERSION_ID"
echo "arch=$(uname -m)"
echo "swap=$(tail -n +2 /proc/swaps | awk '{print $1}' | paste -sd, -)"
echo "clock=$(date +%s.%N)"
if sudo -n true 2>/dev/null; then echo sudo=yes; else echo sudo=no; fi"""


def short_key(key: str) -> str:
    """"type base64" without a comment: the form state and known_hosts compare."""
    return " ".join(key.split()[:2])


def fingerprint(key: str) -> str:
    return asyncssh.import_public_key(key).get_fingerprint()


async def presented_key(address: str, port: int, pinned: str) -> str | None:
    """The host key the server at address:port offers, of the pinned key's type (any usual type on
    first use); None when nothing answers. Only the key exchange happens: nothing is sent."""
    algorithms = KEY_ALGORITHMS.get(pinned.split()[0], [pinned.split()[0]]) if pinned else FIRST_USE_ALGORITHMS
    return await offered_host_key(address, port, algorithms, SCAN_TIMEOUT)


@dataclass(frozen=True)
class HostFacts:
    """What the preflight read on one host."""

    os: str
    version: str
    arch: str
    swap: str  # comma-separated swap devices in use, "" when none
    clock: float
    sudo: bool

    @classmethod
    def parse(cls, text: str) -> HostFacts:
        seen = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        try:
            return cls(seen["os"], seen["version"], seen["arch"], seen["swap"], float(seen["clock"]), seen["sudo"] == "yes")
        except (KeyError, ValueError) as exc:
            raise ValueError(f"unreadable preflight answer (missing or bad {exc.args[0]}): {text.strip()!r}") from None


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return ()


def preflight_problems(host: MachineHost, facts: HostFacts, user: str, sent_at: float, answered_at: float) -> list[str]:
    """One line per problem of `host`, each with its fix; the clock is judged against the window
    in which the host answered."""
    where = f"{host.name} ({host.address})"
    problems = []
    lowest = SUPPORTED_OS.get(facts.os)
    if lowest is None or _version(facts.version) < lowest:
        problems.append(f"{where}: {facts.os} {facts.version} is not supported; fix: use Debian 12 or newer, or Ubuntu 22.04 or newer")
    if facts.arch not in SUPPORTED_ARCH:
        problems.append(f"{where}: architecture {facts.arch} is not supported; fix: use an x86_64 (amd64) host")
    if facts.swap and host.role == "worker":
        problems.append(f"{where}: swap is on ({facts.swap}) and the kubelet refuses to run with swap; "
                        "fix: swapoff -a and remove the swap entry from /etc/fstab")
    if not sent_at - MAX_CLOCK_SKEW <= facts.clock <= answered_at + MAX_CLOCK_SKEW:
        off = facts.clock - (sent_at if facts.clock < sent_at else answered_at)
        problems.append(f"{where}: its clock is {off:+.0f} s off this machine's; certificates and etcd need synchronized "
                        "clocks; fix: enable time sync (timedatectl set-ntp true, or chrony)")
    if not facts.sudo:
        problems.append(f"{where}: {user} cannot run sudo without a password; fix: give {user} passwordless sudo (NOPASSWD in /etc/sudoers.d)")
    return problems


class MachinesProvider:
    kind = "machines"

    def __init__(self, config: Config, topo: Topology, state_dir: Path, client_public_key: str) -> None:
        self.config = config
        self.topo = topo
        self.state_dir = StateDir(Path(state_dir))
        self.client_public_key = client_public_key.strip()

    # --- what the provider knows ----------------------------------------------------------

    def _state(self) -> State:
        return self.state_dir.load()

    def _pinned(self, host: MachineHost, state: State) -> str:
        """The config's key, else the one pinned in state on first use, else "" (not pinned yet)."""
        if host.host_key:
            return short_key(host.host_key)
        record = state.nodes.get(host.name)
        return record.host_key if record else ""

    def _endpoint(self, host: MachineHost, key: str) -> NodeEndpoint:
        return NodeEndpoint(host.name, host.role, host.address, None, host.address, self.config.ssh.port, key)

    def _remote(self) -> Remote:
        key_path, _ = client_key(self.state_dir.ssh_dir, f"khwtui@{self.config.cluster.name}")
        return Remote(key_path)

    def _host(self, host: MachineHost, key: str) -> Host:
        return Host(host.name, host.address, self.config.ssh.port, self.config.ssh.user, key)

    # --- plan and preflight ---------------------------------------------------------------

    def plan(self) -> Plan:
        resources = tuple(PlannedResource("host", h.name, f"{h.role} at {h.address}, adopted as it is") for h in self.config.machines.hosts)
        user = self.config.ssh.user
        notes = [f"khwtui logs in as {user} (passwordless sudo) with the cluster key: {self.client_public_key}"]
        if any(not h.host_key for h in self.config.machines.hosts):
            notes.append("hosts without host_key are trusted on first use (machines.trust_on_first_use)")
        return Plan(resources, None, tuple(notes))

    async def preflight(self) -> None:
        await self._read_hosts(await self._verified_keys(lambda line: None))

    async def _verified_keys(self, log: LogFn) -> dict[str, str]:
        """host name -> its pinned key, once every host has presented exactly that key (or, on first
        use, whatever it presents). Nothing is sent to any host before all of them pass."""
        state = self._state()
        hosts = self.config.machines.hosts
        port = self.config.ssh.port
        seen = await asyncio.gather(*(presented_key(h.address, port, self._pinned(h, state)) for h in hosts))
        keys, problems = {}, []
        for host, key in zip(hosts, seen, strict=True):
            pinned = self._pinned(host, state)
            where = f"{host.name} ({host.address}:{port})"
            if key is None:
                problems.append(f"{where} does not answer SSH; fix: check the address, ssh.port and that sshd runs")
            elif pinned and key != pinned:
                source = "its host_key in the config" if host.host_key else "the key pinned in state on first use"
                problems.append(f"{where} presents host key {fingerprint(key)}, not {fingerprint(pinned)} ({source}); nothing was sent; "
                                "fix: re-pin the key only if you know the host was rebuilt")
            else:
                if not pinned:
                    log(f"{host.name}: trusting host key {fingerprint(key)} on first use (machines.trust_on_first_use)")
                keys[host.name] = key
        if problems:
            raise PreflightError(problems)
        return keys

    async def _read_hosts(self, keys: dict[str, str]) -> None:
        remote = self._remote()
        try:
            found = await asyncio.gather(*(self._preflight_host(remote, h, keys[h.name]) for h in self.config.machines.hosts))
        finally:
            await remote.close()
        problems = [line for lines in found for line in lines]
        if problems:
            raise PreflightError(problems)

    async def _preflight_host(self, remote: Remote, host: MachineHost, key: str) -> list[str]:
        user = self.config.ssh.user
        sent_at = time.time()
        try:
            result = await remote.run(self._host(host, key), PREFLIGHT_COMMAND, timeout=PREFLIGHT_TIMEOUT)
        except RemoteError as exc:
            return [str(exc)]  # names the host, what failed and the fix
        answered_at = time.time()
        try:
            facts = HostFacts.parse(result.stdout)
        except ValueError as exc:
            return [f"{host.name} ({host.address}): {exc}"]
        return preflight_problems(host, facts, user, sent_at, answered_at)

    # --- ensure and nodes -----------------------------------------------------------------

    async def ensure(self, log: LogFn) -> list[NodeEndpoint]:
        """Nothing to create: every host proves its key, passes the preflight, and is adopted."""
        keys = await self._verified_keys(log)
        await self._read_hosts(keys)
        log(f"{len(keys)} hosts answer with their pinned host keys and pass the preflight")
        return [self._endpoint(h, keys[h.name]) for h in self.config.machines.hosts]

    async def nodes(self) -> list[NodeEndpoint]:
        """The inventory with its pinned keys (a host not pinned yet has an empty key)."""
        state = self._state()
        return [self._endpoint(h, self._pinned(h, state)) for h in self.config.machines.hosts]

    def api_address(self) -> str | None:
        return self.topo.api_address

    # --- power: not ours to switch -------------------------------------------------------------

    def stop_notes(self) -> list[str]:
        raise UsageError(POWER_REFUSED)

    async def stop(self, log: LogFn) -> None:
        raise UsageError(POWER_REFUSED)

    async def start(self, log: LogFn) -> list[NodeEndpoint]:
        raise UsageError(POWER_REFUSED)

    # --- teardown: what khwtui put on the hosts ---------------------------------------------

    def teardown_plan(self) -> list[PlannedResource]:
        plan = []
        for name, record in self._state().nodes.items():
            plan += [PlannedResource("unit", f"{name}:{unit}", "stopped and disabled") for unit in record.units]
            plan += [PlannedResource("file", f"{name}:{path}", f"placed by the {f.stage} stage") for path, f in sorted(record.files.items())]
            if record.host_key:
                plan.append(PlannedResource("hosts", f"{name}:{hosts_table.HOSTS}", "this cluster's block of node names (compute stage)"))
        return plan

    async def teardown(self, log: LogFn) -> None:
        state = self._state()
        recorded = {name: r for name, r in state.nodes.items() if r.units or r.files or r.host_key}
        if not recorded:
            log("nothing of khwtui is recorded on the hosts")
            return
        remote = self._remote()
        try:
            done = await asyncio.gather(*(self._teardown_host(remote, name, r) for name, r in recorded.items()), return_exceptions=True)
        finally:
            await remote.close()
        failures = [f"{name}: {result}" for name, result in zip(recorded, done, strict=True) if isinstance(result, BaseException)]
        for line in [r for r in done if isinstance(r, str)]:
            log(line)
        if failures:
            raise RemoteError("down could not clean every host: " + "; ".join(failures))

    async def _teardown_host(self, remote: Remote, name: str, record: NodeRecord) -> str:
        host = Host(name, record.ssh_host or record.internal_ip, record.ssh_port, self.config.ssh.user, record.host_key)
        command = teardown_command(record.units, sorted(record.files), self.config.cluster.name)
        await remote.run(host, command, sudo=True, timeout=TEARDOWN_TIMEOUT)
        return (f"{name}: stopped and disabled {', '.join(record.units) or 'no units'}; removed {len(record.files)} files "
                "and the node names from /etc/hosts")


def teardown_command(units: list[str], files: list[str], cluster: str) -> str:
    """Stop and disable each unit (one already gone is fine), remove the files, let systemd forget
    the unit files, and take the cluster's node names out of /etc/hosts."""
    steps = [f"systemctl disable --now {shlex.quote(unit)} 2>/dev/null || true" for unit in reversed(units)]
    if files:
        steps.append(f"rm -f -- {' '.join(shlex.quote(path) for path in files)}")
    steps += ["systemctl daemon-reload", "systemctl reset-failed 2>/dev/null || true", hosts_table.remove_command(cluster)]
    return "\n".join(steps)
