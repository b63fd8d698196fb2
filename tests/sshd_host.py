"""A real OpenSSH sshd on 127.0.0.1 for tests, logging in a throwaway non-root sudo user.

Why real sshd rather than an in-process asyncssh server: it shows what the runner must survive on
nodes — the MaxSessions limit (left at the default 10), remote processes that outlive a closed
channel, real sudo — which an in-process server hides (reference/gcp-and-ssh.md 5.4).

Needs root (it creates a user `khwtest<hex>` with passwordless sudo through a drop-in in
/etc/sudoers.d/) and the Debian packages openssh-server and sudo. Everything it makes carries the
unique user name or lives in its own temp folder, and teardown removes exactly that: it ends the
listener and the processes it (or the test user, directly or through sudo) started, by PID.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SUDOERS_DIR = Path("/etc/sudoers.d")
START_DEADLINE = 10.0

SSHD_CONFIG = """\
ListenAddress 127.0.0.1:{port}
HostKey {root}/host_key
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
"""


def missing_prerequisites() -> str:
    """Why this machine cannot run the helper ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root (creates a test user and a sudoers drop-in)"
    missing = [p for p in (SSHD, shutil.which("sudo"), shutil.which("ssh-keygen")) if not p or not os.path.exists(p)]
    return "missing openssh-server or sudo: apt-get install -y openssh-server sudo" if missing else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    """Makes an ed25519 key pair at `path`; returns the public key as "ssh-ed25519 AAAA..."."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from the kernel's per-thread children lists (cheap to poll)."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:  # the process or thread has ended
        pass
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _title(pid: int) -> str:
    """argv[0], which sshd sets to its process title ("sshd: user@notty"); "" once gone."""
    return next(iter(cmdline(pid)), "")


def environ(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(condition, what: str, deadline: float = START_DEADLINE) -> None:
    """Polls `condition` until true; fails naming `what` after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class SshdHost:
    root: Path
    port: int
    user: str
    uid: int
    home: Path
    host_key: str  # the sshd's public host key, "ssh-ed25519 AAAA..."
    client_key: Path  # private key the test user's authorized_keys accepts
    process: subprocess.Popen

    @property
    def listener_pid(self) -> int:
        return self.process.pid

    def connections(self) -> list[int]:
        """One PID per client connection: the listener's children (sshd's "[priv]" monitors)."""
        return children(self.listener_pid)

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes: each monitor and its "user@notty" child, which holds
        the socket (killing only the monitor leaves the connection up)."""
        return [p for p in descendants(self.listener_pid) if _title(p).startswith("sshd:")]

    def open_channels(self) -> int:
        """Session channels open right now: the processes sshd runs for them (children of its
        "@notty" processes)."""
        serving = [p for p in self.session_pids() if _title(p).endswith("@notty")]
        return sum(len(children(p)) for p in serving)

    def kill_sessions(self) -> list[int]:
        """SIGKILLs every per-connection sshd process (by PID); returns the PIDs killed."""
        pids = self.session_pids()
        _kill_all(pids)
        return pids

    def processes(self) -> list[int]:
        """Processes started for the test user: owned by it, or run by it through sudo."""
        marker = f"SUDO_USER={self.user}"
        return [p for p in _pids() if p != os.getpid() and (_uid(p) == self.uid or marker in environ(p))]

    def running(self, argv: list[str]) -> list[int]:
        """Live (not zombie) processes of the test user, direct or through sudo, running `argv`."""
        return [p for p in self.processes() if cmdline(p) == argv and _state(p) != "Z"]

    def log(self) -> str:
        return (self.root / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        """Ends the listener, its sessions and the test user's processes, by PID."""
        _kill_all([*descendants(self.listener_pid), self.listener_pid])
        self.process.wait(timeout=START_DEADLINE)
        _kill_all(self.processes())
        wait_until(lambda: not self.processes(), f"processes of {self.user} to end")


def _start_sshd(root: Path, port: int) -> subprocess.Popen:
    config = root / "sshd_config"
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
    with open(root / "sshd.log", "wb") as log:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    end = time.monotonic() + START_DEADLINE
    while "Server listening" not in (root / "sshd.log").read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > end:
            process.kill()
            raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text(errors='replace')}")
        time.sleep(0.02)
    return process


def _add_user(user: str) -> None:
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user], check=True)
    subprocess.run(["usermod", "-p", "*", user], check=True)  # no password, but not locked ("!")
    drop_in = SUDOERS_DIR / user
    SUDOERS_DIR.mkdir(mode=0o755, exist_ok=True)
    fd = os.open(drop_in, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
    with os.fdopen(fd, "w") as f:
        f.write(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    subprocess.run(["visudo", "-cqf", str(drop_in)], check=True)


def _remove_user(user: str) -> None:
    (SUDOERS_DIR / user).unlink(missing_ok=True)
    subprocess.run(["userdel", "--remove", user], check=False, stderr=subprocess.DEVNULL)


@contextmanager
def sshd_host() -> Iterator[SshdHost]:
    """A running sshd for one test user; everything is removed on exit."""
    problem = missing_prerequisites()
    if problem:
        raise RuntimeError(f"sshd_host {problem}")
    user = f"khwtest{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix=f"{user}-"))
    root.chmod(0o755)  # sshd reads authorized_keys as the test user
    _add_user(user)
    host = None
    try:
        host_key = _keygen(root / "host_key")
        client_pub = _keygen(root / "client_key")
        (root / "authorized_keys").write_text(client_pub + "\n")
        (root / "authorized_keys").chmod(0o644)
        port = _free_port()
        (root / "sshd_config").write_text(SSHD_CONFIG.format(port=port, root=root, user=user))
        pw = pwd.getpwnam(user)
        host = SshdHost(root, port, user, pw.pw_uid, Path(pw.pw_dir), host_key, root / "client_key",
                        _start_sshd(root, port))
        yield host
    finally:
        if host is not None:
            host.stop()
        _remove_user(user)
        shutil.rmtree(root, ignore_errors=True)
