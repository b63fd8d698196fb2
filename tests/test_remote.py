"""remote.py against a real OpenSSH sshd on 127.0.0.1 (default MaxSessions 10), logging in a
non-root user with passwordless sudo (tests/sshd_host.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from khwtui.remote import (CommandFailed, CommandTimeout, Host, HostKeyMismatch, Remote, RemoteError,
                           RunResult)
from sshd_host import SshdHost, missing_prerequisites, sshd_host

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshdHost]:
    problem = missing_prerequisites()
    if problem and os.environ.get("CI") != "true":
        pytest.skip(problem)
    with sshd_host() as host:
        yield host


@pytest.fixture
def host(sshd: SshdHost) -> Host:
    return Host("node-0", "127.0.0.1", sshd.port, sshd.user, sshd.host_key)


@pytest.fixture
def lines() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
async def remote(sshd: SshdHost, lines: list[tuple[str, str, str]]) -> AsyncIterator[Remote]:
    r = Remote(sshd.client_key, on_line=lambda *line: lines.append(line))
    yield r
    await r.close()


def stream(lines: list[tuple[str, str, str]], name: str) -> list[str]:
    return [line for _, s, line in lines if s == name]


async def poll(condition, what: str) -> None:
    """Polls without blocking the event loop (the run under test keeps streaming meanwhile)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_run_streams_each_stream_in_order_and_returns_the_exit_status(remote, host, lines):
    command = "for i in $(seq 1 40); do echo out$i; echo err$i >&2; done; printf tail; exit 3"
    result = await remote.run(host, command, check=False)
    assert result == RunResult(3, "".join(f"out{i}\n" for i in range(1, 41)) + "tail",
                               "".join(f"err{i}\n" for i in range(1, 41)))
    assert stream(lines, "out") == [f"out{i}" for i in range(1, 41)] + ["tail"]
    assert stream(lines, "err") == [f"err{i}" for i in range(1, 41)]
    assert stream(lines, "cmd") == [command]
    assert {node for node, _, _ in lines} == {"node-0"}


async def test_lines_arrive_while_the_command_still_runs(remote, host, lines):
    task = asyncio.create_task(remote.run(host, "echo first; sleep 1; echo second"))
    await poll(lambda: "first" in stream(lines, "out"), "the first line")
    assert not task.done() and "second" not in stream(lines, "out")
    assert (await task).stdout == "first\nsecond\n"


async def test_thirty_concurrent_runs_share_one_connection_under_max_sessions(remote, host, sshd):
    peak, done = 0, threading.Event()

    def sample() -> None:  # in a thread: reading /proc must not stall the runs
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, sshd.open_channels())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        results = await asyncio.gather(*(remote.run(host, f"echo {i}; sleep 0.2") for i in range(30)))
    finally:
        done.set()
        sampler.join()
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(30)]
    assert 2 <= peak <= 8  # the default max_channels
    assert len(sshd.connections()) == 1
    assert remote.reconnects == 0


async def test_a_cut_connection_reconnects_and_the_command_runs_exactly_once(remote, host, sshd, lines):
    log = sshd.home / "cut.log"
    log.unlink(missing_ok=True)
    task = asyncio.create_task(remote.run(host, f"echo ran >> {log}; echo before; sleep 1; echo after"))
    await poll(lambda: "before" in stream(lines, "out"), "the command to start")
    assert sshd.kill_sessions()
    result = await task
    assert log.read_text() == "ran\n"
    assert remote.reconnects >= 1
    assert result.stdout == "before\nafter\n"
    assert stream(lines, "out") == ["before", "after"]


async def test_cancelling_a_run_leaves_no_process_on_the_node(remote, host, sshd, lines):
    task = asyncio.create_task(remote.run(host, "echo started; sleep 600"))
    await poll(lambda: "started" in stream(lines, "out"), "the command to start")
    assert sshd.running(["sleep", "600"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sshd.running(["sleep", "600"]) == []


async def test_a_timeout_raises_and_stops_the_remote_process_even_under_sudo(remote, host, sshd, lines):
    with pytest.raises(CommandTimeout, match=r"node-0: `echo up; sleep 600` did not finish within 1 s"):
        await remote.run(host, "echo up; sleep 600", sudo=True, timeout=1)
    assert stream(lines, "out") == ["up"]
    assert sshd.running(["sleep", "600"]) == []


async def test_a_failed_command_raises_with_its_last_output_lines(remote, host):
    with pytest.raises(CommandFailed) as failed:
        await remote.run(host, "echo one; echo two >&2; exit 7")
    assert (failed.value.host, failed.value.exit_status) == ("node-0", 7)
    assert set(failed.value.lines) == {"one", "two"}
    assert "node-0: `echo one; echo two >&2; exit 7` exited with status 7" in str(failed.value)
    assert failed.value.exit_code == 1


async def test_input_bytes_reach_the_command_unchanged(remote, host):
    data = bytes(range(256)) * 64 + b"no newline at the end"
    result = await remote.run(host, "sha256sum | cut -c1-64", input=data)
    assert result.stdout == hashlib.sha256(data).hexdigest() + "\n"


async def test_sudo_runs_as_root_and_without_it_as_the_login_user(remote, host, sshd):
    assert (await remote.run(host, "id -un", sudo=True)).stdout == "root\n"
    assert (await remote.run(host, "id -un")).stdout == f"{sshd.user}\n"


async def test_finished_runs_leave_only_an_end_marker(remote, host, sshd):
    await remote.run(host, "echo x", input=b"data")
    runs = sshd.home / ".khwtui" / "runs"
    assert (runs.stat().st_mode & 0o777, runs.parent.stat().st_mode & 0o777) == (0o700, 0o700)
    assert {p.name for p in runs.rglob("*") if p.is_file()} == {"end"}


async def test_put_installs_the_exact_bytes_mode_and_owner(remote, host, sshd, lines):
    target = sshd.root / "files" / "etc" / "unit.conf"
    data = b"\x00\xffbinary\nline two\n"
    assert await remote.put(host, data, str(target), mode=0o640, owner=sshd.user, group="root") is True
    st = target.stat()
    assert (target.read_bytes(), st.st_mode & 0o7777, st.st_uid, st.st_gid) == (data, 0o640, sshd.uid, 0)
    assert list((sshd.home / ".khwtui" / "put").iterdir()) == []
    assert stream(lines, "cmd") == [f"put {target} (18 bytes, mode 0640, {sshd.user}:root)"]


async def test_put_again_changes_nothing_until_something_differs(remote, host, sshd):
    target = sshd.root / "files" / "again.conf"
    assert await remote.put(host, b"v1\n", str(target)) is True
    before = target.stat().st_mtime_ns
    assert await remote.put(host, b"v1\n", str(target)) is False
    assert target.stat().st_mtime_ns == before
    assert await remote.put(host, b"v1\n", str(target), mode=0o600) is True
    assert target.stat().st_mode & 0o7777 == 0o600
    assert await remote.put(host, b"v2\n", str(target), mode=0o600) is True
    assert target.read_bytes() == b"v2\n"


async def test_a_node_presenting_another_host_key_gets_nothing_sent(remote, host, sshd):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    impostor = Host("node-0", host.address, host.port, host.user, other)
    marker = sshd.home / "must-not-exist"
    logins = sshd.log().count("Accepted publickey")
    with pytest.raises(HostKeyMismatch, match=r"node-0 \(127\.0\.0\.1:\d+\) presented a host key other than "
                                              r"the pinned SHA256:"):
        await remote.run(impostor, f"touch {marker}")
    with pytest.raises(HostKeyMismatch):
        await remote.put(impostor, b"x", str(marker))
    assert not marker.exists()
    assert sshd.log().count("Accepted publickey") == logins


async def test_a_missing_or_malformed_host_key_is_refused_before_connecting(remote, host, sshd):
    with pytest.raises(RemoteError, match="node-0: no pinned host key"):
        await remote.run(Host("node-0", host.address, host.port, host.user, ""), "true")
    with pytest.raises(RemoteError, match="node-0: host_key is not an OpenSSH public key"):
        await remote.run(Host("node-0", host.address, host.port, host.user, "ssh-ed25519 garbage"), "true")


async def test_put_names_the_file_when_install_fails(remote, host, sshd):
    target = sshd.root / "files" / "bad-owner.conf"
    with pytest.raises(RemoteError, match=f"node-0: installing {target} failed with status 1: .*nosuchuser"):
        await remote.put(host, b"x", str(target), owner="nosuchuser")
    assert not target.exists()
    assert list((sshd.home / ".khwtui" / "put").iterdir()) == []


async def test_a_command_too_long_for_one_exec_is_refused_with_the_fix(remote, host, sshd):
    with pytest.raises(RemoteError, match="too long for one SSH exec .*fix: pass it as input to `bash -s`"):
        await remote.run(host, "echo " + "x" * 140_000)
    assert sshd.connections() == []


def test_channels_per_connection_must_stay_below_sshds_max_sessions(sshd):
    with pytest.raises(RemoteError, match=re.escape("max_channels: 10 is outside 1..9")):
        Remote(sshd.client_key, max_channels=10)


def test_an_unreadable_client_key_is_named(tmp_path: Path):
    with pytest.raises(RemoteError, match="SSH client key .*missing"):
        Remote(tmp_path / "missing")
