"""Real SSH servers for tests of khwtui/transport/remote.py: local nspawn nodes, never this machine.

Why real nodes rather than an in-process asyncssh server: they show what the runner must survive —
OpenSSH's default MaxSessions (10, the provider leaves it alone), remote processes that outlive a
closed channel, real sudo, pam and logind — and the commands run inside the node, not on the test
machine (docs/ARCHITECTURE.md "Testing").

`node_hosts()` brings up one LocalProvider cluster (1 controller, 1 worker and the lb that the local
provider always adds; outbound off) under a unique janitor prefix and yields controller-0 and
worker-0; on exit it tears the cluster down. Everything else is read from the host: the node's
files through its overlay's merged dir, its processes through /proc (they are ordinary host
processes below the node's init, whose host PID runtime.toml records), its sshd log through
`nsenter` into the node.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import janitor
from test_local_provider import free_node_cidr, local_config

from khwtui.model.topology import Topology
from khwtui.providers import nspawn
from khwtui.providers.local import RUNTIME_FILE, LocalProvider

NODES = ("controller-0", "worker-0")


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from the kernel's per-thread children lists (cheap to poll)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        return [int(child) for task in tasks for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:  # the process or a thread of it has ended
        return []


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _title(pid: int) -> str:
    """argv[0], which sshd sets to its process title ("sshd: user@notty"); "" once gone."""
    return next(iter(nspawn.cmdline(pid)), "")


@dataclass(frozen=True)
class NodeHost:
    """One booted node as the tests see it. Paths named `home` or passed to run() are the node's;
    `path()` turns them into the host path of the same file."""

    name: str
    address: str
    port: int
    user: str  # config.ssh.user: non-root, passwordless sudo
    uid: int
    home: str
    root: Path  # the node's filesystem on the host (its overlay's merged dir)
    host_key: str  # the node's pinned public host key, "ssh-ed25519 AAAA..."
    client_key: Path  # private key the node's authorized_keys accepts
    init_pid: int  # the node's systemd, as the host numbers it

    def path(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    def nsenter(self, *argv: str) -> str:
        """Runs `argv` inside the node (its namespaces, its binaries); returns stdout."""
        namespaces = ("--mount", "--uts", "--ipc", "--net", "--pid")
        return subprocess.run(["nsenter", f"--target={self.init_pid}", *namespaces, *argv],
                              capture_output=True, text=True, check=True, timeout=30).stdout

    def log(self) -> str:
        """sshd's journal lines; --sync first, so every line logged before this call is in it."""
        self.nsenter("journalctl", "--sync")
        return self.nsenter("journalctl", "--no-pager", "--output=cat", "--identifier=sshd")

    def sshd_setting(self, name: str) -> str:
        """One effective sshd setting (`sshd -T`, lower-case names), e.g. "maxsessions"."""
        values = dict(line.split(" ", 1) for line in self.nsenter("sshd", "-T").splitlines() if " " in line)
        return values[name]

    def processes(self) -> list[int]:
        """Every process of the node but its init."""
        return _descendants(self.init_pid)

    def _listener(self) -> int:
        (pid,) = [p for p in _children(self.init_pid) if _title(p).startswith("sshd:")]  # "sshd: ... [listener] ..."
        return pid

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes: each monitor and its "user@notty" child, which holds
        the socket (killing only the monitor leaves the connection up)."""
        return [p for p in _descendants(self._listener()) if _title(p).startswith("sshd:")]

    def serving_pids(self) -> list[int]:
        """The "user@notty" sshd processes: one per connection, holding its socket."""
        return [p for p in self.session_pids() if _title(p).endswith("@notty")]

    @staticmethod
    def open_channels(serving_pid: int) -> int:
        """Session channels open right now on one connection: the processes sshd runs for them."""
        return len(_children(serving_pid))

    def kill_sessions(self) -> list[int]:
        """SIGKILLs every per-connection sshd process (by PID), cutting the connections; the
        listener stays. Returns the PIDs killed."""
        pids = self.session_pids()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def running(self, argv: list[str]) -> list[int]:
        """Live (not zombie) processes in the node running exactly `argv`."""
        return [p for p in self.processes() if nspawn.cmdline(p) == argv and nspawn.alive(p)]


def _client_key(folder: Path) -> tuple[Path, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = folder / "id_ed25519"
    key.write_private_key(path)
    path.chmod(0o600)
    return path, key.export_public_key().decode().strip()


def _uid(root: Path, user: str) -> int:
    """The user's uid from the node's own /etc/passwd (the host's may not know it)."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2])
    raise LookupError(f"{user} is not in {root}/etc/passwd")


@contextmanager
def node_hosts(folder: Path) -> Iterator[tuple[NodeHost, NodeHost]]:
    """Boots a 1-controller, 1-worker local cluster in `folder`; yields (controller-0, worker-0)."""
    key_path, public = _client_key(folder)
    config = local_config(local={"outbound": False}, network={"node_cidr": free_node_cidr()},
                          topology={"controllers": 1, "workers": 1})
    provider = LocalProvider(config, Topology(config), folder / "state", public, prefix=janitor.new_prefix())
    try:
        endpoints = {n.name: n for n in asyncio.run(provider.ensure(lambda line: None))}
        runtime = tomllib.loads((provider.dir / RUNTIME_FILE).read_text())["nodes"]
        hosts = []
        for name in NODES:
            endpoint, root = endpoints[name], Path(runtime[name]["mount"])
            user = config.ssh.user
            hosts.append(NodeHost(name, endpoint.ssh_host, endpoint.ssh_port, user, _uid(root, user), f"/home/{user}",
                                  root, endpoint.host_key, key_path, runtime[name]["init_pid"]))
        yield hosts[0], hosts[1]
    finally:
        asyncio.run(provider.teardown(lambda line: None))
