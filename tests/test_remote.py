"""remote.py against real OpenSSH on local nspawn nodes (tests/nodehost.py), logged in as the
non-root user with passwordless sudo that the local provider sets up; sshd keeps its default
MaxSessions (10). Nothing here runs on the test machine itself."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shlex
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nodehost import NodeHost, node_hosts

from khwtui.artifacts.render import NodeFile
from khwtui.transport.remote import (
    _PLACE,
    CommandFailed,
    CommandTimeout,
    Host,
    HostKeyMismatch,
    Remote,
    RemoteError,
    RunResult,
)

pytestmark = pytest.mark.integration
FILES = "/opt/remote-test"  # where the put() tests place files on the node


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeHost, NodeHost]]:
    """controller-0 (every test's host) and worker-0 (another node, for the host key test)."""
    with node_hosts(tmp_path_factory.mktemp("remote")) as pair:
        yield pair


@pytest.fixture(scope="module")
def node(nodes: tuple[NodeHost, NodeHost]) -> NodeHost:
    return nodes[0]


@pytest.fixture
def host(node: NodeHost) -> Host:
    return Host("node-0", node.address, node.port, node.user, node.host_key)


@pytest.fixture
def lines() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
async def remote(node: NodeHost, lines: list[tuple[str, str, str]]) -> AsyncIterator[Remote]:
    r = Remote(node.client_key, on_line=lambda *line: lines.append(line))
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


async def test_thirty_concurrent_runs_share_one_connection_under_max_sessions(remote, host, node):
    assert node.sshd_setting("maxsessions") == "10"  # OpenSSH's default, left alone by the provider
    logins, serving = node.log().count("Accepted publickey"), set(node.serving_pids())
    await remote.run(host, "true")
    (connection,) = set(node.serving_pids()) - serving
    peak, done = 0, threading.Event()

    def sample() -> None:  # in a thread: reading /proc must not stall the runs
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, node.open_channels(connection))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        results = await asyncio.gather(*(remote.run(host, f"echo {i}; sleep 0.2") for i in range(30)))
    finally:
        done.set()
        sampler.join()
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(30)]
    assert 2 <= peak <= 8  # the default max_channels
    assert node.log().count("Accepted publickey") == logins + 1  # one connection, reused
    assert remote.reconnects == 0


async def test_a_cut_connection_reconnects_and_the_command_runs_exactly_once(remote, host, node, lines):
    log = f"{node.home}/cut.log"
    node.path(log).unlink(missing_ok=True)
    task = asyncio.create_task(remote.run(host, f"echo ran >> {log}; echo before; sleep 1; echo after"))
    await poll(lambda: "before" in stream(lines, "out"), "the command to start")
    assert node.kill_sessions()
    result = await task
    assert node.path(log).read_text() == "ran\n"
    assert remote.reconnects >= 1
    assert result.stdout == "before\nafter\n"
    assert stream(lines, "out") == ["before", "after"]


async def test_cancelling_a_run_leaves_no_process_on_the_node(remote, host, node, lines):
    task = asyncio.create_task(remote.run(host, "echo started; sleep 600"))
    await poll(lambda: "started" in stream(lines, "out"), "the command to start")
    assert node.running(["sleep", "600"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert node.running(["sleep", "600"]) == []


async def test_a_timeout_raises_and_stops_the_remote_process_even_under_sudo(remote, host, node, lines):
    with pytest.raises(CommandTimeout, match=r"node-0: `echo up; sleep 600` did not finish within 1 s"):
        await remote.run(host, "echo up; sleep 600", sudo=True, timeout=1)
    assert stream(lines, "out") == ["up"]
    assert node.running(["sleep", "600"]) == []


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


async def test_sudo_runs_as_root_and_without_it_as_the_login_user(remote, host, node):
    assert (await remote.run(host, "id -un", sudo=True)).stdout == "root\n"
    assert (await remote.run(host, "id -un")).stdout == f"{node.user}\n"


async def test_finished_runs_leave_only_an_end_marker(remote, host, node):
    await remote.run(host, "echo x", input=b"data")
    runs = node.path(node.home) / ".khwtui" / "runs"
    assert (runs.stat().st_mode & 0o777, runs.parent.stat().st_mode & 0o777) == (0o700, 0o700)
    assert {p.name for p in runs.rglob("*") if p.is_file()} == {"end"}


async def test_put_installs_the_exact_bytes_mode_and_owner(remote, host, node, lines):
    target = f"{FILES}/etc/unit.conf"
    data = b"\x00\xffbinary\nline two\n"
    assert await remote.put(host, data, target, mode=0o640, owner=node.user, group="root") is True
    st = node.path(target).stat()
    assert (node.path(target).read_bytes(), st.st_mode & 0o7777, st.st_uid, st.st_gid) == (data, 0o640, node.uid, 0)
    assert [p.name for p in node.path(f"{FILES}/etc").iterdir()] == ["unit.conf"]  # no temp file left
    assert stream(lines, "cmd") == [f"put {target} (18 bytes, mode 0640, {node.user}:root)"]


async def test_put_again_changes_nothing_until_something_differs(remote, host, node):
    target, file = f"{FILES}/again.conf", node.path(f"{FILES}/again.conf")
    assert await remote.put(host, b"v1\n", target) is True
    before = file.stat().st_mtime_ns
    assert await remote.put(host, b"v1\n", target) is False
    assert file.stat().st_mtime_ns == before
    assert await remote.put(host, b"v1\n", target, mode=0o600) is True
    assert file.stat().st_mode & 0o7777 == 0o600
    assert await remote.put(host, b"v2\n", target, mode=0o600) is True
    assert file.read_bytes() == b"v2\n"


async def test_put_costs_one_channel_when_unchanged_and_two_when_it_places(remote, host):
    target = f"{FILES}/channels.conf"
    await remote.put(host, b"one\n", target)
    before = remote.channels
    assert await remote.put(host, b"one\n", target) is False
    assert await remote.put(host, b"two\n", target) is True
    assert remote.channels - before == 3  # stat; stat + the placing command (no SFTP, no separate install)


async def test_write_places_every_file_through_one_channel(remote, host, node):
    files = [NodeFile(f"{FILES}/many/{i}.pem", f"key {i}\n".encode() * (i + 1), 0o600 + i, node.user, "root")
             for i in range(3)] + [NodeFile(f"{FILES}/many/empty", b"")]
    before = remote.channels
    await remote.write(host, files)
    assert remote.channels - before == 1
    for f in files:
        st = node.path(f.path).stat()
        assert (node.path(f.path).read_bytes(), st.st_mode & 0o7777, st.st_uid) == (f.content, f.mode, 0 if f.owner == "root" else node.uid)
    assert sorted(p.name for p in node.path(f"{FILES}/many").iterdir()) == ["0.pem", "1.pem", "2.pem", "empty"]


async def test_a_cut_stream_places_none_of_the_files(remote, host, node):
    kept = node.path(f"{FILES}/cut/kept.conf")
    await remote.put(host, b"old\n", f"{FILES}/cut/kept.conf")
    whole, cut = b"new\n", b"0123456789"
    args = ["khwtui-test"]
    for path, data in ((f"{FILES}/cut/kept.conf", whole), (f"{FILES}/cut/other.conf", cut)):
        args += [path, "644", "root", "root", hashlib.sha256(data).hexdigest(), str(len(data))]
    result = await remote.run(host, f"sh -c {shlex.quote(_PLACE)} khwtui-put {shlex.join(args)}", sudo=True,
                              input=whole + cut[:4], check=False)  # the second file's bytes end early
    assert result.exit_status == 1 and "other.conf: the bytes received do not match their sha256" in result.stderr
    assert kept.read_bytes() == b"old\n"
    assert sorted(p.name for p in kept.parent.iterdir()) == ["kept.conf"]


async def test_the_link_is_zlib_compressed_after_login(remote, host):
    await remote.run(host, "true")
    conn = remote._links[host].conn
    assert (conn.get_extra_info("send_compression"), conn.get_extra_info("recv_compression")) == ("zlib@openssh.com",) * 2


async def test_a_node_presenting_another_host_key_gets_nothing_sent(remote, host, nodes):
    node, other = nodes  # node-0's pinned key, but the address answers with other's own key
    impostor = Host("node-0", other.address, other.port, other.user, node.host_key)
    marker = f"{other.home}/must-not-exist"
    logins = other.log().count("Accepted publickey")
    with pytest.raises(HostKeyMismatch, match=rf"node-0 \({re.escape(other.address)}:22\) presented a host key "
                                              r"other than the pinned SHA256:"):
        await remote.run(impostor, f"touch {marker}")
    with pytest.raises(HostKeyMismatch):
        await remote.put(impostor, b"x", marker)
    assert not other.path(marker).exists()
    assert other.log().count("Accepted publickey") == logins


async def test_a_missing_or_malformed_host_key_is_refused_before_connecting(remote, host, node):
    with pytest.raises(RemoteError, match="node-0: no pinned host key"):
        await remote.run(Host("node-0", host.address, host.port, host.user, ""), "true")
    with pytest.raises(RemoteError, match="node-0: host_key is not an OpenSSH public key"):
        await remote.run(Host("node-0", host.address, host.port, host.user, "ssh-ed25519 garbage"), "true")


async def test_put_names_the_file_when_install_fails(remote, host, node):
    target = f"{FILES}/bad-owner.conf"
    with pytest.raises(RemoteError, match=f"node-0: installing {target} failed with status 1: .*nosuchuser"):
        await remote.put(host, b"x", target, owner="nosuchuser")
    assert not [p for p in node.path(FILES).iterdir() if "bad-owner" in p.name]


async def test_a_command_too_long_for_one_exec_is_refused_with_the_fix(remote, host, node):
    logins = node.log().count("Accepted publickey")
    with pytest.raises(RemoteError, match=r"too long for one SSH exec .*fix: pass it as input to `bash -s`"):
        await remote.run(host, "echo " + "x" * 140_000)
    assert node.log().count("Accepted publickey") == logins


def test_channels_per_connection_must_stay_below_sshds_max_sessions(node):
    with pytest.raises(RemoteError, match=re.escape("max_channels: 10 is outside 1..9")):
        Remote(node.client_key, max_channels=10)


def test_an_unreadable_client_key_is_named(tmp_path: Path):
    with pytest.raises(RemoteError, match=r"SSH client key .*missing"):
        Remote(tmp_path / "missing")
