"""state.toml: exact round trips, atomic writes that survive SIGKILL, the run lock, schema handling."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from khwtui.core.errors import EXIT_USAGE, StateError
from khwtui.model import state as state_module
from khwtui.model.state import (
    MIGRATIONS,
    SCHEMA,
    CheckRecord,
    FileRecord,
    NodeRecord,
    StageRecord,
    State,
    StateDir,
    default_state_dir,
)

TESTS = Path(__file__).resolve().parent
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def populated_state(version: int = 0, nodes: int = 3) -> State:
    """A state with every field set; `version` is folded into every node so a torn mix would show."""
    state = State(cluster="kthw", provider="local", public_address="10.240.0.40")
    state.stages["compute"] = StageRecord(status="passed", detail="3 nodes", started=1700000000.25, finished=1700000042.5)
    state.stages["smoke"] = StageRecord(
        status="unverified",
        detail="no real apiserver",
        started=1700000100.0,
        checks=[
            CheckRecord("secret encrypted", "passed", node="controller-0"),
            CheckRecord("nodeport", "unverified", evidence="discovery lacks the group"),
            CheckRecord("exec", "failed", node="worker-1", evidence="$ kubectl exec ...\nerror: 403"),
        ],
    )
    for i in range(nodes):
        name = f"worker-{i}"
        files = {
            f"/etc/kubernetes/{name}-{version}.kubeconfig": FileRecord(
                f"/etc/kubernetes/{name}-{version}.kubeconfig", f"{version:064x}", 0o600, stage="kubeconfigs"
            ),
            "/etc/systemd/system/kubelet.service": FileRecord(
                "/etc/systemd/system/kubelet.service", f"{i:064x}", 0o644, owner="root", group="adm", stage="workers"
            ),
        }
        state.nodes[name] = NodeRecord(
            name, "worker", internal_ip=f"10.240.0.{20 + i}", external_ip=f"127.0.0.{2 + i}", ssh_host=f"127.0.0.{2 + i}",
            ssh_port=2200 + version % 1000, host_key=f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{version}",
            files=files, units=["containerd.service", "kubelet.service"],
        )
    state.resources["local"] = {"prefix": "khw1", "bridge": "khw1-br", "version": str(version)}
    state.resources["gcp"] = {"network": "kthw", "address": "kthw-api"}
    return state


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def temps(sdir: StateDir) -> list[str]:
    """Temp files of saves that never reached their rename."""
    return [name for name in os.listdir(sdir.path) if name.endswith(".tmp")]


@pytest.fixture
def sdir(tmp_path: Path) -> StateDir:
    d = StateDir(tmp_path / "cluster")
    d.ensure_layout()
    return d


def test_a_fully_populated_state_survives_a_round_trip(sdir: StateDir) -> None:
    state = populated_state()
    sdir.save(state)
    assert sdir.load() == state
    text = sdir.state_file.read_text()
    assert "finished" in text.split("[stages.smoke]")[0]  # compute has one
    assert "finished" not in text.split("[stages.smoke]")[1].split("[nodes")[0]  # None is left out
    assert sdir.load().stages["smoke"].finished is None


def test_files_and_folders_get_exact_modes_whatever_the_umask(tmp_path: Path) -> None:
    sdir = StateDir(tmp_path / "cluster")
    sdir.path.mkdir(mode=0o777)
    sdir.path.chmod(0o777)
    old = os.umask(0o077)
    try:
        sdir.ensure_layout()
    finally:
        os.umask(old)
    sdir.save(populated_state())
    assert mode(sdir.path) == 0o700
    assert [mode(d) for d in (sdir.pki_dir, sdir.ssh_dir, sdir.kubeconfig_dir)] == [0o700] * 3
    assert [mode(d) for d in (sdir.rendered_dir, sdir.logs_dir)] == [0o755] * 2
    assert mode(sdir.state_file) == 0o600
    assert sdir.state_file == sdir.path / "state.toml"


def test_a_missing_file_is_a_fresh_state_and_stage_is_get_or_create(sdir: StateDir) -> None:
    state = sdir.load()
    assert state == State() and state.schema == SCHEMA
    record = state.stage("pki")
    assert record.status == "pending"
    assert state.stage("pki") is record
    assert list(state.stages) == ["pki"]


def test_default_state_dir_is_under_the_user_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_state_dir("kthw") == tmp_path / "khwtui" / "kthw"


def test_a_failed_rename_keeps_the_old_state_and_leaves_no_temp(sdir: StateDir, monkeypatch: pytest.MonkeyPatch) -> None:
    old = populated_state(1)
    sdir.save(old)

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        sdir.save(populated_state(2))
    assert sdir.load() == old
    assert sorted(p.name for p in sdir.path.iterdir() if p.is_file()) == ["state.toml"]


def run_child(code: str, *args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], text=True, cwd=TESTS, **popen  # type: ignore[call-overload]
    )


def test_a_process_killed_between_write_and_rename_leaves_the_old_state_and_the_next_save_cleans_up(sdir: StateDir) -> None:
    old = populated_state(1)
    sdir.save(old)
    child = run_child(
        """
        import os, sys
        from pathlib import Path
        from test_state import populated_state
        from khwtui.model.state import StateDir
        os.replace = lambda src, dst: os._exit(9)  # dies after the temp is written and fsynced
        StateDir(Path(sys.argv[1])).save(populated_state(2))
        """,
        str(sdir.path),
    )
    assert child.wait() == 9
    assert len(temps(sdir)) == 1
    assert sdir.load() == old
    sdir.save(populated_state(3))
    assert sdir.load() == populated_state(3)
    assert temps(sdir) == []


SAVE_FOREVER = """
    import sys
    from pathlib import Path
    from test_state import populated_state
    from khwtui.model.state import StateDir
    sdir = StateDir(Path(sys.argv[1]))
    with sdir.lock():
        version = 0
        while True:
            version += 1
            sdir.save(populated_state(version, nodes=60))
    """


def wait_for_version(sdir: StateDir, child: subprocess.Popen, target: int) -> None:
    """Poll the file until the writer has saved at least `target` versions."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert child.poll() is None, "the writer died on its own"
        state = sdir.load()
        if int(state.resources.get("local", {}).get("version", "0")) >= target:
            return
        time.sleep(0.002)
    raise AssertionError(f"the writer did not reach version {target}")


def wait_for_a_temp(sdir: StateDir, child: subprocess.Popen) -> None:
    """Poll until the writer is between creating its temp file and renaming it."""
    deadline = time.monotonic() + 60
    while not temps(sdir):
        assert child.poll() is None and time.monotonic() < deadline, "never saw the writer's temp file"


# Where the writer is killed: after its n-th save, plus a delay, or once its temp file shows.
KILL_POINTS = [(1, 0.0, False), (3, 0.001, False), (6, 0.002, False), (10, 0.004, False), (15, 0.0, True), (20, 0.0, True)]


@pytest.mark.parametrize(("saves", "delay", "mid_write"), KILL_POINTS)
def test_a_writer_sigkilled_at_any_point_leaves_a_whole_written_version(
    sdir: StateDir, saves: int, delay: float, mid_write: bool
) -> None:
    child = run_child(SAVE_FOREVER, str(sdir.path))
    try:
        wait_for_version(sdir, child, saves)  # returns right after a rename: the file just changed
        if mid_write:
            wait_for_a_temp(sdir, child)
        time.sleep(delay)  # a kill delay, not a wait for a condition
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    loaded = sdir.load()
    version = int(loaded.resources["local"]["version"])
    assert version >= saves
    assert loaded == populated_state(version, nodes=60)
    with sdir.lock():  # the dead writer's lock went with it: the run can resume
        sdir.save(loaded)
    assert temps(sdir) == []
    assert sdir.load() == loaded


LOCK_AND_REPORT = """
    import sys
    from pathlib import Path
    from khwtui.core.errors import StateError
    from khwtui.model.state import StateDir
    try:
        with StateDir(Path(sys.argv[1])).lock():
            print("locked", flush=True)
            sys.stdin.read()
    except StateError as exc:
        print(exc, flush=True)
        sys.exit(exc.exit_code)
    """


def test_a_second_process_cannot_take_the_lock_and_is_told_who_holds_it(sdir: StateDir) -> None:
    lock_file = sdir.path / "lock"
    lock_file.write_text("987654321\n")  # what a SIGKILLed holder leaves: a stale PID, no lock
    with sdir.lock():
        assert lock_file.read_text() == f"{os.getpid()}\n"
        child = run_child(LOCK_AND_REPORT, str(sdir.path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        out, _ = child.communicate()
    assert child.returncode == EXIT_USAGE
    assert out.strip() == (
        f"cluster state {sdir.path} is in use by another khwtui (pid {os.getpid()}); wait for it or stop it"
    )
    assert lock_file.read_text() == ""  # released: no PID left to mislead
    child = run_child(LOCK_AND_REPORT, str(sdir.path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    out, _ = child.communicate()
    assert (child.returncode, out) == (0, "locked\n")


def test_the_lock_held_by_another_process_is_refused_here_until_released(sdir: StateDir) -> None:
    child = run_child(LOCK_AND_REPORT, str(sdir.path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(StateError, match=rf"in use by another khwtui \(pid {child.pid}\)") as caught, sdir.lock():
            pass
        assert caught.value.exit_code == EXIT_USAGE
    finally:
        child.communicate("")
    assert child.returncode == 0
    with sdir.lock(), pytest.raises(StateError, match=rf"pid {os.getpid()}"), sdir.lock():  # not reentrant, even in one process
        pass


def write_state(sdir: StateDir, text: str) -> None:
    sdir.state_file.write_text(textwrap.dedent(text))


def test_a_state_from_a_newer_khwtui_is_refused(sdir: StateDir) -> None:
    write_state(sdir, "schema = 2\ncluster = \"kthw\"\n")
    with pytest.raises(StateError, match=r"written by a newer khwtui \(schema 2; this one reads up to 1\)") as caught:
        sdir.load()
    assert caught.value.exit_code == EXIT_USAGE
    assert str(sdir.state_file) in str(caught.value)


@pytest.mark.parametrize("content", [b"schema = 1\n[stages\n", b"schema = \"1\n", b"\xff\xfe schema = 1"])
def test_a_corrupt_file_is_refused_naming_the_file_and_the_fix(sdir: StateDir, content: bytes) -> None:
    sdir.state_file.write_bytes(content)
    with pytest.raises(StateError) as caught:
        sdir.load()
    message = str(caught.value)
    assert message.startswith(f"{sdir.state_file} is not valid TOML (")
    assert "fix: correct it, or move state.toml aside and run `khwtui up` again" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("schema = 1\n[stages.pki]\nstatus = \"passed\"\ncolour = \"green\"\n", "stages.pki.colour: unknown key; fix: it was written by a newer khwtui"),
        ("schema = 1\nfuture = true\n", "future: unknown key"),
        ("schema = 1\n[stages.pki]\nstatus = \"done\"\n", "stages.pki.status: 'done' is not one of pending, running"),
        ("schema = 1\n[nodes.n]\nname = \"n\"\nrole = \"lb\"\nssh_port = \"22\"\n", "nodes.n.ssh_port: expected int, found str '22'"),
        ("schema = 1\n[nodes.n]\nname = \"n\"\n", "nodes.n.role: missing"),
        ("schema = 1\n[nodes.n]\nname = \"n\"\nrole = \"lb\"\n[nodes.n.files.\"/etc/x\"]\npath = \"/etc/x\"\n", 'nodes.n.files."/etc/x".sha256: missing'),
        ("schema = 1\n[[stages.pki.checks]]\ncheck = \"ca\"\nresult = \"pending\"\n", "stages.pki.checks[0].result: 'pending' is not one of"),
        ("schema = true\n", "schema: missing or not an integer"),
        ("cluster = \"kthw\"\n", "schema: missing or not an integer"),
        ("schema = -1\n", "schema: schema -1 is not a khwtui state schema"),
        ("schema = 0\nstages = \"passed\"\n", "stages: expected dict, found str 'passed'"),
    ],
)
def test_values_that_do_not_fit_the_schema_are_refused_by_key_path(sdir: StateDir, text: str, where: str) -> None:
    write_state(sdir, text)
    with pytest.raises(StateError, match="fix: ") as caught:
        sdir.load()
    assert str(caught.value).startswith(f"{sdir.state_file}: {where}")


def test_whole_numbers_in_float_fields_are_read_as_floats(sdir: StateDir) -> None:
    write_state(sdir, "schema = 1\n[stages.pki]\nstarted = 1700000000\n")
    started = sdir.load().stages["pki"].started
    assert (started, type(started)) == (1700000000.0, float)


def test_a_schema_0_state_is_migrated(sdir: StateDir) -> None:
    assert sorted(MIGRATIONS) == list(range(SCHEMA))
    write_state(
        sdir,
        """\
        schema = 0
        cluster = "kthw"
        provider = "local"
        [stages]
        compute = "passed"
        pki = "failed"
        [resources.local]
        prefix = "khw1"
        """,
    )
    state = sdir.load()
    assert state == State(
        cluster="kthw",
        provider="local",
        stages={"compute": StageRecord(status="passed"), "pki": StageRecord(status="failed")},
        resources={"local": {"prefix": "khw1"}},
    )
    sdir.save(state)
    assert sdir.state_file.read_text().startswith(f"schema = {SCHEMA}\n")


def with_pem(where: str) -> State:
    state = populated_state()
    if where == "resource":
        state.resources["gcp"]["ssh-keys"] = PEM
    elif where == "host_key":
        state.nodes["worker-0"].host_key = PEM
    elif where == "evidence":
        state.stages["smoke"].checks[2].evidence = f"$ cat key\n{PEM}"
    elif where == "unit":
        state.nodes["worker-1"].units.append(PEM)
    elif where == "table key":
        state.resources[PEM] = {}
    return state


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ("resource", "resources.gcp.ssh-keys"),
        ("host_key", "nodes.worker-0.host_key"),
        ("evidence", "stages.smoke.checks[2].evidence"),
        ("unit", "nodes.worker-1.units[2]"),
        ("table key", "resources"),
    ],
)
def test_save_refuses_a_private_key_anywhere(sdir: StateDir, where: str, path: str) -> None:
    sdir.save(populated_state(7))
    before = sdir.state_file.read_bytes()
    with pytest.raises(ValueError, match="refusing to save a private key") as caught:
        sdir.save(with_pem(where))
    assert f"(at {path})" in str(caught.value)
    assert "BEGIN" not in str(caught.value)
    assert sdir.state_file.read_bytes() == before
    assert temps(sdir) == []


def test_save_refuses_what_load_would_refuse(sdir: StateDir) -> None:
    state = populated_state()
    state.stage("pki").status = "done"
    with pytest.raises(ValueError, match=re.escape("stages.pki.status: 'done' is not one of")):
        sdir.save(state)
    assert not sdir.state_file.exists()


def test_logs_are_appended_per_node(sdir: StateDir) -> None:
    sdir.append_log("worker-0", ["$ sudo -n install ...", "ok"])
    sdir.append_log("worker-0", iter(["second run"]))
    sdir.append_log("", ["checking providers"])
    sdir.append_log("worker-1", [])
    assert (sdir.logs_dir / "worker-0.log").read_text() == "$ sudo -n install ...\nok\nsecond run\n"
    assert (sdir.logs_dir / "khwtui.log").read_text() == "checking providers\n"
    assert sorted(p.name for p in sdir.logs_dir.iterdir()) == ["khwtui.log", "worker-0.log"]
    with pytest.raises(ValueError, match="not a node name"):
        sdir.append_log("../state", ["x"])


@dataclass
class FutureRecord:
    """A record the converter has never seen: it must be stored with no code of its own."""

    name: str
    weight: float | None = None
    tags: list[str] = field(default_factory=list)
    parts: dict[str, CheckRecord] = field(default_factory=dict)


def test_the_converter_is_driven_by_the_dataclasses_alone() -> None:
    record = FutureRecord("x", tags=["a"], parts={"p q": CheckRecord("ca", "passed")})
    table = state_module._encode(record)
    assert table == {"name": "x", "tags": ["a"], "parts": {"p q": {"check": "ca", "result": "passed", "node": "", "evidence": ""}}}
    assert state_module._decode(table, FutureRecord, "") == record
