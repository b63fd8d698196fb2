"""A shell (or one command) on a node: `ssh` with the cluster's key, trusting exactly the pinned
host key. The TUI's shell key and `khwtui ssh` both come here.

The app suspends itself around `open_shell`, so ssh owns the terminal. The pinned key goes into
a temporary known_hosts file (0600 in a 0700 folder, removed afterwards) with
StrictHostKeyChecking=yes: a node presenting any other key is refused, never learned. The
user's ~/.ssh/config and agent are left out, as in khwtui's own connections.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from khwtui.model.cluster import Cluster


@dataclass(frozen=True)
class ShellTarget:
    """How to log in to one node: its SSH endpoint, pinned host key and the cluster's client key."""

    node: str
    host: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA..." as pinned in state; never shown
    key_path: Path


def shell_target(cluster: Cluster, node: str) -> ShellTarget | None:
    """The node's SSH endpoint and pinned host key from state (None before the compute stage)."""
    from khwtui.artifacts.sshkey import client_key

    record = cluster.state.nodes.get(node)
    if record is None or not record.host_key:
        return None
    key_path, _ = client_key(cluster.state_dir.ssh_dir, f"khwtui@{cluster.config.cluster.name}")
    return ShellTarget(node, record.ssh_host or record.internal_ip, record.ssh_port, cluster.config.ssh.user, record.host_key, key_path)


Runner = Callable[[list[str]], "subprocess.CompletedProcess[bytes]"]


def known_hosts_line(target: ShellTarget) -> str:
    """The pinned key as OpenSSH reads it: "host type key", "[host]:port type key" off port 22."""
    key_type, key = target.host_key.split()[:2]
    where = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    return f"{where} {key_type} {key}\n"


@contextmanager
def pinned_known_hosts(target: ShellTarget) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="khwtui-ssh-") as folder:  # made 0700
        path = Path(folder) / "known_hosts"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(known_hosts_line(target))
        yield path


def ssh_argv(target: ShellTarget, known_hosts: Path, command: Sequence[str] = ()) -> list[str]:
    """ssh's arguments; a command goes as one shell-quoted string, so each argument arrives as given."""
    remote = [shlex.join(command)] if command else []
    return [
        "ssh",
        "-F", "/dev/null",  # not the user's config: the same endpoint and key khwtui itself uses
        "-i", str(target.key_path),
        "-p", str(target.port),
        "-l", target.user,
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f'UserKnownHostsFile="{known_hosts}"',
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "UpdateHostKeys=no",
        "--", target.host, *remote,
    ]  # fmt: skip


def open_shell(target: ShellTarget, run: Runner = subprocess.run) -> int:
    """Run an interactive ssh to the node on this terminal (from the TUI); returns ssh's exit status."""
    print(f"khwtui: shell on {target.node} ({target.user}@{target.host}); exit to return to khwtui", flush=True)
    return run_ssh(target, (), run)


def run_ssh(target: ShellTarget, command: Sequence[str], run: Runner = subprocess.run) -> int:
    """ssh to the node on this terminal, a login shell or `command`; returns ssh's exit status."""
    with pinned_known_hosts(target) as known_hosts:
        return run(ssh_argv(target, known_hosts, command)).returncode
