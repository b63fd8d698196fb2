"""Commands and files on nodes over SSH (asyncssh): one connection per host, reused.

Host keys: every connection trusts exactly the host's pinned key (known_hosts built from it alone,
no ~/.ssh/config, no agent); another key stops with HostKeyMismatch before anything is sent.

Channels: OpenSSH refuses channels beyond MaxSessions (default 10) per connection, so each host's
channels — command, helper and SFTP alike — share one semaphore of `max_channels` (< 10).
Each channel is a round trip and a few packets on the operator's uplink, so files bound for a node
travel together in one (write()), and the link is zlib-compressed (delayed until after login, as
OpenSSH offers it): the run script repeated in every command shrinks to a fraction (measured with
benchmarks/bench_delivery.py; see its docstring).

Commands run detached (templates/remote-run.sh.j2): without a pty, OpenSSH neither kills a remote
command when its channel closes nor lets a client resume it after a drop. So run() gives each
command a fresh run id; the node starts it with setsid only if the id's directory (an atomic mkdir
in ~/.khwtui/runs) does not exist yet, and keeps its output, process group and exit status there.
One channel follows the output files; after a drop the client reconnects (exponential backoff with
jitter, within `reconnect_deadline`) and re-attaches to the same id from the last line it saw, so
the command runs exactly once and no line is shown twice. A cancel or timeout kills the process
group over the (re)connected session. Commands run with bash, from the login user's home; they
show in the node's process list, so secrets travel as `input` or by put(), never in the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import shlex
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import asyncssh

from khwtui.artifacts.render import NodeFile, render
from khwtui.core.errors import OperationError

LineSink = Callable[[str, str, str], None]  # (node name, stream "out"|"err"|"cmd", line)
ProgressSink = Callable[[int, int], None]  # (bytes sent so far, total bytes)

MAX_SESSIONS = 10  # OpenSSH's default MaxSessions: channels per connection
MAX_ARG = 131_072  # sshd runs the script as one `sh -c` argument; Linux caps an argument at 128 KiB
OPEN_RETRIES = 20  # channel opens refused while sshd still frees a just-closed session (see _on_host)
TAIL_LINES = 20  # output lines kept for errors
KEEPALIVE = 5.0  # seconds; 3 missed replies mark a silently dead connection as dropped
STAGING = ".khwtui/put"  # private (0700) upload folder in the login user's home
COMPRESSION = ["zlib@openssh.com", "none"]  # delayed zlib (after login) where sshd offers it

T = TypeVar("T")

_STAT = """if [ -f "$1" ]; then
  printf '%s %s\\n' "$(sha256sum <"$1" | cut -c1-64)" "$(stat -c '%a %U %G' "$1")"
fi"""

# Places any number of files in one channel: each file's bytes, read exactly (dd count_bytes) from
# stdin in argument order, go to a temp file next to its target with the sha256 checked and owner
# and mode set; only when every file arrived whole are they renamed into place, so a cut stream
# installs nothing, readers see the old file or the new one, and a retry after a drop redoes it all.
# Arguments: tag, then path mode owner group sha256 size for each file.
_PLACE = """set -e
umask 077
tag=$1; shift
tmp() { printf '%s/.%s.%s' "$(dirname "$1")" "$(basename "$1")" "$tag"; }
each() {
  f=$1; shift
  while [ $# -gt 0 ]; do "$f" "$@"; shift 6; done
}
drop() { rm -f "$(tmp "$1")"; }
stage() {
  t=$(tmp "$1")
  mkdir -p "$(dirname "$1")"
  dd bs=65536 count="$6" iflag=count_bytes,fullblock status=none >"$t"
  [ "$(sha256sum <"$t" | cut -c1-64)" = "$5" ] || { echo "$1: the bytes received do not match their sha256" >&2; exit 1; }
  chown "$3:$4" "$t"
  chmod "$2" "$t"
}
settle() { mv -f "$(tmp "$1")" "$1"; }
trap 'each drop "$@"' EXIT
each stage "$@"
each settle "$@"
"""


@dataclass(frozen=True)
class Host:
    name: str  # node name, used in log events
    address: str
    port: int
    user: str
    host_key: str  # pinned "ssh-ed25519 AAAA..." (OpenSSH public key text); empty is refused


@dataclass(frozen=True)
class RunResult:
    exit_status: int
    stdout: str
    stderr: str


class RemoteError(OperationError):
    """A node could not be reached or did not do what was asked."""


class HostKeyMismatch(RemoteError):
    """The node presented a key other than the pinned one; nothing was sent to it."""


class CommandFailed(RemoteError):
    """A command exited non-zero; carries its last output lines as evidence."""

    def __init__(self, host: str, command: str, exit_status: int, lines: tuple[str, ...]) -> None:
        self.host, self.command, self.exit_status, self.lines = host, command, exit_status, lines
        last = f"; last output: {lines[-1]}" if lines else ""
        super().__init__(f"{host}: `{_short(command)}` exited with status {exit_status}{last}")


class CommandTimeout(RemoteError):
    """A command ran past its timeout; it was stopped on the node."""

    def __init__(self, host: str, command: str, timeout: float, lines: tuple[str, ...]) -> None:
        self.host, self.command, self.timeout, self.lines = host, command, timeout, lines
        super().__init__(f"{host}: `{_short(command)}` did not finish within {timeout:g} s and was stopped")


def _short(command: str) -> str:
    """The command's first line, cut to 80 characters, for one-line messages."""
    text = command.strip()
    first = text.splitlines()[0] if text else ""
    return first if first == text and len(first) <= 80 else first[:77] + "..."


def _check_placeable(host: Host, file: NodeFile) -> None:
    if not file.path.startswith("/") or not 0 <= file.mode <= 0o7777:
        raise RemoteError(f"{host.name}: put({file.path!r}, mode={file.mode:o}) needs an absolute path and a mode "
                          "in 0..7777")


def _batches(files: Sequence[NodeFile]) -> list[list[NodeFile]]:
    """The files in order, cut into batches whose place command stays well below one exec's limit."""
    batches: list[list[NodeFile]] = []
    room = 0
    for f in files:
        need = len(f.path) + len(f.owner) + len(f.group) + 120  # quoting, mode, sha256, size
        if not batches or need > room:
            batches.append([])
            room = MAX_ARG // 2 - len(_PLACE)
        batches[-1].append(f)
        room -= need
    return batches


def _known_hosts(host: Host) -> tuple[asyncssh.SSHKnownHosts, str]:
    """known_hosts holding only the pinned key, and that key's fingerprint."""
    if not host.host_key.strip():
        raise RemoteError(f"{host.name}: no pinned host key; the provider must record the node's key first")
    try:
        fingerprint = asyncssh.import_public_key(host.host_key).get_fingerprint()
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise RemoteError(f"{host.name}: host_key is not an OpenSSH public key ({exc})") from None
    pattern = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    return asyncssh.import_known_hosts(f"{pattern} {host.host_key.strip()}\n"), fingerprint


@dataclass
class _Link:
    """One host's connection, replaced after a drop; `slots` bounds its open channels."""

    host: Host
    slots: asyncio.Semaphore
    conn: asyncssh.SSHClientConnection | None = None
    dialing: asyncio.Future[asyncssh.SSHClientConnection] | None = None


@dataclass
class _Job:
    """One run() in flight: its run id and the complete lines seen per stream, where a re-attach resumes."""

    host: Host
    command: str
    sudo: bool
    input: bytes
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    lines: dict[str, list[str]] = field(default_factory=lambda: {"out": [], "err": []})
    partial: dict[str, str] = field(default_factory=lambda: {"out": "", "err": ""})
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    sent: bool = False  # the start script may have reached the node
    lines_to: LineSink | None = None  # this run's out/err lines go here instead of the runner's sink

    def script(self, action: str) -> str:
        return render("remote-run.sh.j2", q=shlex.quote, action=action, run_id=self.run_id,
                      command=self.command, sudo=self.sudo, input_size=len(self.input),
                      out_from=len(self.lines["out"]) + 1, err_from=len(self.lines["err"]) + 1)

    def text(self, stream: str) -> str:
        return "".join(f"{line}\n" for line in self.lines[stream]) + self.partial[stream]


async def _checked(conn: asyncssh.SSHClientConnection, command: str, what: str, input: bytes = b"") -> str:
    """Runs a short idempotent helper command with `input` as its stdin; returns stdout, raises naming
    `what` with stderr's last line."""
    async with conn.create_process(command, encoding=None) as proc:  # waits for the full close, which
        if input:
            with contextlib.suppress(BrokenPipeError):  # it ended before reading: its status says why
                proc.stdin.write(input)
        proc.stdin.write_eof()
        result = await proc.wait()  # frees the server's session slot (conn.run returns before it)
    if result.exit_status is None:
        raise asyncssh.ConnectionLost("channel closed without an exit status")
    if result.exit_status != 0:
        err = _decoded(result.stderr).strip().splitlines()
        raise RemoteError(f"{what} failed with status {result.exit_status}: {err[-1] if err else ''}")
    return _decoded(result.stdout)


def _decoded(data: bytes | str | None) -> str:
    """What a process printed, as text (`encoding=None` hands back bytes)."""
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


async def _staging(sftp: asyncssh.SFTPClient) -> None:
    """The private upload folder: only the login user can enter it."""
    await sftp.makedirs(STAGING, attrs=asyncssh.SFTPAttrs(permissions=0o700), exist_ok=True)
    for folder in (str(Path(STAGING).parent), STAGING):
        await sftp.chmod(folder, 0o700)


async def _download(conn: asyncssh.SSHClientConnection, staged: str) -> bytes:
    async with conn.start_sftp_client() as sftp, sftp.open(staged, "rb") as f:
        return await f.read()


async def _upload_file(conn: asyncssh.SSHClientConnection, local: Path, staged: str, progress: ProgressSink | None) -> None:
    """Streams a local file block by block (never whole in memory) to a private staged path."""
    async with conn.start_sftp_client() as sftp:
        await _staging(sftp)
        handler = (lambda src, dst, done, total: progress(done, total)) if progress else None
        await sftp.put(str(local), staged, progress_handler=handler)
        await sftp.chmod(staged, 0o600)


async def offered_host_key(address: str, port: int, algorithms: list[str], timeout: float) -> str | None:
    """The host key the server at address:port offers for `algorithms`, as "type base64"; None while
    nothing answers. Only the key exchange happens: nothing is sent (used to learn or check a pin)."""
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(address, port, server_host_key_algs=algorithms, config=None), timeout)
    except (TimeoutError, OSError, asyncssh.Error):
        return None
    return " ".join(key.export_public_key().decode().split()[:2]) if key else None

class Remote:
    """The SSH side of a run: commands and files on any number of hosts, one connection each."""

    def __init__(self, client_key: Path, *, on_line: LineSink | None = None, max_channels: int = 8,
                 connect_timeout: float = 15, reconnect_deadline: float = 60) -> None:
        if not 1 <= max_channels < MAX_SESSIONS:
            raise RemoteError(f"max_channels: {max_channels} is outside 1..{MAX_SESSIONS - 1}; "
                              f"fix: stay below sshd's default MaxSessions {MAX_SESSIONS}")
        try:
            self._key = asyncssh.read_private_key(client_key)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise RemoteError(f"SSH client key {client_key}: cannot read it ({exc})") from None
        self._on_line = on_line
        self._max_channels = max_channels
        self._connect_timeout = connect_timeout
        self._reconnect_deadline = reconnect_deadline
        self._links: dict[Host, _Link] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.reconnects = 0
        self.channels = 0  # channels opened: what each node's round trips cost on the operator's link

    async def run(self, host: Host, command: str, *, sudo: bool = False, timeout: float | None = None,
                  check: bool = True, input: bytes | None = None, lines_to: LineSink | None = None) -> RunResult:
        """Runs `command` once on `host`, streaming its lines to on_line (or to `lines_to`, which then
        decides what to log); returns when it has ended.

        Cancelling run() (or passing `timeout`) kills the remote process group before returning.
        """
        job = _Job(host, command, sudo, input or b"", lines_to=lines_to)
        if len(job.script("attach").encode()) >= MAX_ARG:
            raise RemoteError(f"{host.name}: command `{_short(command)}` is too long for one SSH exec "
                              f"(128 KiB once quoted); fix: pass it as input to `bash -s`")
        for line in command.splitlines():
            self._emit(host, "cmd", f"{'sudo ' if sudo else ''}{line}")
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                status = await self._on_host(host, partial(self._attach, job))
        except asyncio.CancelledError:
            await self._stop(job)
            raise
        except TimeoutError:
            if not deadline.expired():
                raise
            await self._stop(job)
            raise CommandTimeout(host.name, command, timeout or 0, tuple(job.recent)) from None
        await self._finish(job, "finish")
        result = RunResult(status, job.text("out"), job.text("err"))
        if check and status != 0:
            raise CommandFailed(host.name, command, status, tuple(job.recent))
        return result

    async def put(self, host: Host, data: bytes, path: str, *, mode: int = 0o644, owner: str = "root",
                  group: str = "root") -> bool:
        """Places `data` at `path` with mode and owner; True if it changed anything.

        Compares the existing file's sha256, mode and owner first, so an unchanged file costs one
        short command; otherwise write() places it."""
        file = NodeFile(path, data, mode, owner, group)
        _check_placeable(host, file)
        want = f"{hashlib.sha256(data).hexdigest()} {mode:o} {owner} {group}"
        stat = f"sudo -n sh -c {shlex.quote(_STAT)} khwtui-stat {shlex.quote(path)}"
        have = await self._on_host(host, partial(_checked, command=stat, what=f"{host.name}: reading {path}"))
        if have.strip() == want:
            return False
        await self.write(host, [file])
        return True

    async def write(self, host: Host, files: Sequence[NodeFile]) -> None:
        """Places every file (bytes, mode, owner) atomically, without comparing first: one channel and
        one `sudo -n` per batch of files, their bytes as its stdin (never in a command line or a log)."""
        for file in files:
            _check_placeable(host, file)
            self._emit(host, "cmd", f"put {file.path} ({len(file.content)} bytes, mode {file.mode:04o}, "
                                    f"{file.owner}:{file.group})")
        for batch in _batches(files):
            args = [f"khwtui-{uuid.uuid4().hex}"]
            for f in batch:
                args += [f.path, f"{f.mode:o}", f.owner, f.group, hashlib.sha256(f.content).hexdigest(), str(len(f.content))]
            place = f"sudo -n sh -c {shlex.quote(_PLACE)} khwtui-put {shlex.join(args)}"
            what = f"{host.name}: installing {', '.join(f.path for f in batch)}"
            data = b"".join(f.content for f in batch)
            await self._on_host(host, partial(_checked, command=place, what=what, input=data))

    async def get(self, host: Host, path: str) -> bytes:
        """The bytes of `path` (readable by root only): copied with sudo into the private upload
        folder, read by SFTP, and removed there; nothing of it goes through a log."""
        staged = f"{STAGING}/{uuid.uuid4().hex}"
        copy = (f"mkdir -p -m 0700 {STAGING} && sudo -n install -m 0600 -o \"$(id -u)\" -g \"$(id -g)\" "
                f"{shlex.quote(path)} {staged}")
        self._emit(host, "cmd", f"get {path}")
        await self._on_host(host, partial(_checked, command=copy, what=f"{host.name}: copying {path}"))
        try:
            return await self._on_host(host, partial(_download, staged=staged))
        finally:
            await self._on_host(host, partial(_checked, command=f"rm -f {staged}", what=f"{host.name}: removing {staged}"))


    async def upload(self, host: Host, local: Path, progress: ProgressSink | None = None) -> str:
        """Streams a local file to a private staged path in the login user's home (relative to it,
        where commands run) and returns that path; the caller's command moves it into place."""
        staged = f"{STAGING}/{uuid.uuid4().hex}"
        self._emit(host, "cmd", f"upload {local.name} ({local.stat().st_size} bytes) to {staged}")  # noqa: ASYNC240 - one stat of a local file
        await self._on_host(host, partial(_upload_file, local=local, staged=staged, progress=progress))
        return staged

    async def close(self) -> None:
        """Waits for pending stops, then closes every connection."""
        await asyncio.gather(*self._stopping, return_exceptions=True)
        for link in self._links.values():
            if link.dialing is not None:
                link.dialing.cancel()
            if link.conn is not None:
                link.conn.close()
                await link.conn.wait_closed()
        self._links.clear()

    def _emit_line(self, job: _Job, stream: str, line: str) -> None:
        if job.lines_to is not None:
            job.lines_to(job.host.name, stream, line)
        else:
            self._emit(job.host, stream, line)

    def _emit(self, host: Host, stream: str, line: str) -> None:
        if self._on_line is not None:
            self._on_line(host.name, stream, line)

    async def _on_host(self, host: Host, op: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]) -> T:
        """Runs `op` on the host's connection in one channel slot. After a drop it reconnects and runs
        `op` again, so `op` must be safe to repeat (everything here is, by run id or by content)."""
        link = self._links.setdefault(host, _Link(host, asyncio.Semaphore(self._max_channels)))
        loop = asyncio.get_running_loop()
        first_drop: float | None = None
        refused = 0
        while True:
            conn = await self._connection(link)
            try:
                async with link.slots:
                    self.channels += 1
                    return await op(conn)
            except (OSError, asyncssh.Error) as exc:
                if conn.is_closed():
                    first_drop = loop.time() if first_drop is None else first_drop
                    if loop.time() - first_drop > self._reconnect_deadline:
                        raise RemoteError(f"{host.name}: connection keeps dropping ({exc})") from exc
                elif isinstance(exc, asyncssh.ChannelOpenError) and refused < OPEN_RETRIES:
                    # sshd frees a session slot a loop pass after the channel's close, so an open sent
                    # right after a close can be refused ("no more sessions") although we stay below
                    # MaxSessions. Nothing ran: retry.
                    refused += 1
                    await asyncio.sleep(0.02 * refused)
                else:
                    raise RemoteError(f"{host.name}: {exc}") from exc

    async def _connection(self, link: _Link) -> asyncssh.SSHClientConnection:
        """The host's live connection. One dial at a time per host, shared by every caller: when the
        host is down, they all fail together after one reconnect_deadline, not one after another."""
        if link.conn is not None and not link.conn.is_closed():
            return link.conn
        if link.dialing is None:
            link.dialing = asyncio.ensure_future(self._dial(link.host))
            link.dialing.add_done_callback(partial(self._dialed, link))
        return await asyncio.shield(link.dialing)

    def _dialed(self, link: _Link, dialing: asyncio.Future[asyncssh.SSHClientConnection]) -> None:
        link.dialing = None
        if dialing.cancelled() or dialing.exception() is not None:
            return
        if link.conn is not None:
            self.reconnects += 1
        link.conn = dialing.result()

    async def _dial(self, host: Host) -> asyncssh.SSHClientConnection:
        """Connects trusting only the pinned key, retrying transient failures with backoff."""
        known, fingerprint = _known_hosts(host)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._reconnect_deadline
        delay = 0.1
        while True:
            try:
                return await asyncssh.connect(
                    host.address, host.port, username=host.user, client_keys=[self._key], known_hosts=known,
                    config=None, agent_path=None, connect_timeout=self._connect_timeout,
                    keepalive_interval=KEEPALIVE, keepalive_count_max=3, compression_algs=COMPRESSION)
            except asyncssh.HostKeyNotVerifiable:
                raise HostKeyMismatch(
                    f"{host.name} ({host.address}:{host.port}) presented a host key other than the pinned "
                    f"{fingerprint}; nothing was sent; fix: re-pin the key only if the node was rebuilt") from None
            except asyncssh.PermissionDenied:
                raise RemoteError(f"{host.name}: {host.user}@{host.address}:{host.port} refused the cluster's "
                                  f"SSH key; fix: install its public key for {host.user}") from None
            except (OSError, asyncssh.Error) as exc:
                left = give_up - loop.time()
                if left <= 0:
                    raise RemoteError(f"{host.name}: cannot connect to {host.address}:{host.port} within "
                                      f"{self._reconnect_deadline:g} s ({exc or type(exc).__name__})") from None
                await asyncio.sleep(min(left, random.uniform(delay / 2, delay)))
                delay = min(delay * 2, 5.0)

    async def _attach(self, job: _Job, conn: asyncssh.SSHClientConnection) -> int:
        """Starts the run if the node has not yet, and streams it from where we left off."""
        job.sent = True
        async with conn.create_process(job.script("attach"), encoding=None) as proc:
            if job.input:  # no EOF: the node reads its EOF as "client gone"
                with contextlib.suppress(BrokenPipeError):  # the run may already be over (input unread)
                    proc.stdin.write(job.input)
            tails = await asyncio.gather(self._pump(job, proc.stdout, "out"), self._pump(job, proc.stderr, "err"))
            done = await proc.wait()
        if done.exit_status is None:
            raise asyncssh.ConnectionLost(f"run channel closed without an exit status ({done.exit_signal})")
        for stream, tail in zip(("out", "err"), tails, strict=True):
            job.partial[stream] = tail
            if tail:
                job.recent.append(tail)
                self._emit_line(job, stream, tail)
        return done.exit_status

    async def _pump(self, job: _Job, reader: asyncssh.SSHReader[bytes], stream: str) -> str:
        """Emits complete lines; returns a last line without newline, kept back until the run ends."""
        async for raw in reader:
            if not raw.endswith(b"\n"):
                return raw.decode(errors="replace")
            line = raw[:-1].decode(errors="replace")
            job.lines[stream].append(line)
            job.recent.append(line)
            self._emit_line(job, stream, line)
        return ""

    async def _stop(self, job: _Job) -> None:
        """Kills the run's process group, shielded: a second cancel cannot leave it running."""
        if not job.sent:
            return
        task = asyncio.ensure_future(self._finish(job, "stop"))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        await asyncio.shield(task)

    async def _finish(self, job: _Job, action: str) -> None:
        """Stops and/or removes the run's files on the node; a failure is shown, not raised, as the
        command's own outcome is already known."""
        try:
            what = f"{job.host.name}: {action} run {job.run_id}"
            await self._on_host(job.host, partial(_checked, command=job.script(action), what=what))
        except RemoteError as exc:
            self._emit(job.host, "err", f"khwtui: {exc}")
