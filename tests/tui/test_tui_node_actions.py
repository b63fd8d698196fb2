"""Node actions: a node's full log file, and a shell over ssh that trusts only the pinned key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from textual.notifications import Notify
from textual.widgets import Log

from khwtui.transport.node_ssh import (
    known_hosts_line,
    open_shell,
    pinned_known_hosts,
    ssh_argv,
)
from khwtui.tui.app import make_app
from khwtui.tui.commands import TargetCommands
from khwtui.tui.contracts import Services, ShellTarget
from khwtui.tui.node_log import CONTINUATION, NodeLogScreen, wrap_line

from .fake_engine import FakeEngine
from .fake_services import FakeHealth, build_events, health_round
from .support import FrozenClock, gcp_config, gcp_topology, wait_until

SIZE = (120, 40)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM6Pw1hQ7i2y0oXcWmB6mP8y4x1Jm4rC2v6f1nXz0aQk"


def target(tmp_path: Path, port: int = 22) -> ShellTarget:
    return ShellTarget("controller-1", "35.247.31.19", port, "khwtui", f"{HOST_KEY} root@controller-1", tmp_path / "id_ed25519")


def app_at(state_dir: Path | None, **services):
    config = gcp_config()
    return make_app(config, gcp_topology(config), FakeEngine([]), initial=build_events(), clock=FrozenClock(), state_dir=state_dir, services=Services(**services))


def test_the_known_hosts_file_pins_exactly_the_host_key_and_is_private(tmp_path) -> None:
    assert known_hosts_line(target(tmp_path)) == f"35.247.31.19 {HOST_KEY}\n"  # the comment is dropped
    with pinned_known_hosts(target(tmp_path, port=2222)) as path:
        assert path.read_text() == f"[35.247.31.19]:2222 {HOST_KEY}\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists() and not path.parent.exists()


def test_ssh_refuses_unknown_host_keys_and_ignores_the_users_config(tmp_path) -> None:
    argv = ssh_argv(target(tmp_path, port=2222), Path("/tmp/kh"))
    options = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]
    assert "StrictHostKeyChecking=yes" in options and 'UserKnownHostsFile="/tmp/kh"' in options
    assert {"IdentitiesOnly=yes", "IdentityAgent=none", "GlobalKnownHostsFile=/dev/null", "UpdateHostKeys=no"} <= set(options)
    assert argv[:3] == ["ssh", "-F", "/dev/null"]
    assert argv[argv.index("-i") + 1] == str(tmp_path / "id_ed25519")
    assert (argv[argv.index("-p") + 1], argv[argv.index("-l") + 1]) == ("2222", "khwtui")
    assert argv[-2:] == ["--", "35.247.31.19"]


def test_open_shell_runs_the_ssh_on_the_path_with_the_pinned_key(tmp_path, monkeypatch, capsys) -> None:
    """A stand-in `ssh` records its arguments and the known_hosts file it was given, and exits 7."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    fake = bin_dir / "ssh"
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {record}\n'
        'for a in "$@"; do case "$a" in UserKnownHostsFile=*) f="${a#UserKnownHostsFile=}"; f="${f%\\"}"; f="${f#\\"}";; esac; done\n'
        f'cat "$f" >> {record}\n'
        "exit 7\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert open_shell(target(tmp_path, port=2222)) == 7
    lines = record.read_text().splitlines()
    assert lines[-1] == f"[35.247.31.19]:2222 {HOST_KEY}"
    assert "StrictHostKeyChecking=yes" in lines and lines[-2] == "35.247.31.19"
    assert capsys.readouterr().out == "khwtui: shell on controller-1 (khwtui@35.247.31.19); exit to return to khwtui\n"


async def test_no_shell_is_offered_where_the_app_cannot_suspend(tmp_path) -> None:
    app = app_at(None, shell=lambda node: target(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        app.node_tree.cursor_line = 2  # controller-1
        await pilot.pause()
        assert app.is_headless and not app.can_open_shell
        assert app.check_action("node_shell", ()) is False
        titles = [title for title, _, _ in TargetCommands(app.screen)._entries()]
        assert not [t for t in titles if t.startswith("Shell on")]
        assert "Run stage etcd" in titles


async def test_n_shows_the_whole_log_file_of_the_node_under_the_cursor(tmp_path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [f"14:14:{i % 60:02d} [etcd] line {i}" for i in range(3000)]
    (logs / "controller-1.log").write_text("".join(f"{line}\n" for line in lines))
    app = app_at(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.node_tree.focus()
        app.node_tree.cursor_line = 0  # the controllers group: no single node
        await pilot.pause()
        assert app.check_action("node_log", ()) is None
        app.node_tree.cursor_line = 2
        await pilot.pause()
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, NodeLogScreen), "the node log")
        await pilot.pause()
        log = app.screen.query_one(Log)
        assert list(log.lines) == lines  # every line, not the pane's bounded tail
        assert log.is_vertical_scroll_end and log.has_focus
        assert app.screen.query_one("#dialog").border_title == "controller-1.log · 3000 lines"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, NodeLogScreen), "the log to close")


def unwrap(rows: list[str]) -> str:
    return rows[0] + "".join(row.removeprefix(CONTINUATION) for row in rows[1:])


def test_a_long_line_wraps_at_spaces_keeping_every_character() -> None:
    line = "03:26:46 [frontend] $ sudo sh -c 'for f in /etc/nginx/conf.d/kubernetes-healthz.conf; do  test -e \"$f\"; done'"
    rows = wrap_line(line, 40)
    assert len(rows) > 2 and all(len(row) <= 40 for row in rows)
    assert all(row.startswith(CONTINUATION) for row in rows[1:])
    assert unwrap(rows) == line
    assert wrap_line("x" * 100, 30)[1] == CONTINUATION + "x" * 26  # no space: broken anyway
    assert wrap_line(line, len(line)) == [line]


async def test_the_node_log_wraps_long_lines_to_its_width_and_again_when_the_terminal_narrows(tmp_path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = ["03:26:47 [frontend] $ sudo /usr/bin/curl --silent --show-error --max-time 5 " + "http://127.0.0.1/healthz " * 8, "03:26:47 [frontend] 200"]
    (logs / "controller-1.log").write_text("".join(f"{line}\n" for line in lines))
    app = app_at(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.show_node_log("controller-1")
        await wait_until(pilot, lambda: isinstance(app.screen, NodeLogScreen), "the node log")
        await pilot.pause()
        log = app.screen.query_one(Log)
        for size in (SIZE, (80, 24)):
            await pilot.resize_terminal(*size)
            await wait_until(pilot, lambda: log.wrapped_at == log.scrollable_content_region.width, "the log to wrap at its width")
            rows = list(log.lines)
            assert max(len(row) for row in rows) <= log.wrapped_at < size[0]
            assert [unwrap(rows[:-1]), rows[-1]] == lines  # every character, each line one block
            assert log.virtual_size.width <= log.scrollable_content_region.width  # nothing to scroll sideways to


async def test_a_node_without_a_log_file_says_so(tmp_path) -> None:
    app = app_at(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.show_node_log("worker-1")
        await wait_until(pilot, lambda: isinstance(app.screen, NodeLogScreen), "the node log")
        await pilot.pause()
        assert unwrap(list(app.screen.query_one(Log).lines)) == (
            f"no log yet: {tmp_path / 'logs' / 'worker-1.log'} does not exist (nothing ran on this node)"
        )


async def test_where_the_terminal_cannot_be_handed_over_the_shell_says_so_and_probing_goes_on(tmp_path) -> None:
    seen = []
    app = app_at(None, shell=lambda node: target(tmp_path), health=FakeHealth([health_round()]))
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        app.open_shell("controller-1")  # what x and the palette call; headless, it cannot suspend
        await pilot.pause()
        assert [(m.notification.title, m.notification.message) for m in seen if isinstance(m, Notify)] == [
            ("no shell", "this terminal cannot hand itself over to ssh")
        ]
        assert not app.health_paused
        app.health_tick()
        await wait_until(pilot, lambda: app.progress.health.rounds >= 1, "probing to go on")
