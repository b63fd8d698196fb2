"""Release delivery without nodes (issue 19): the node's install and status scripts run here with
bash against the test mirror on 127.0.0.1 (their cache and targets in a temporary folder), the
choice between node and push, the operator's streamed download, and the --auto progress lines."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import shlex
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mirror.server import MirrorServer
from stagerun import ScriptedRemote, local_raw, stage_context

from khwtui.console.headless import ConsoleSink
from khwtui.core.errors import ConfigError
from khwtui.core.events import TransferProgress
from khwtui.model import config as config_mod
from khwtui.toolkit.delivery import NODE, PUSH, fixed_choice, plan_line, probe
from khwtui.toolkit.release_install import NodeReleases, Release, ReleaseSpec, install_command, install_error, parse_report, status_command
from khwtui.transport.binaries import Binaries, ChecksumMismatch, DownloadFailed, Resolved

FILE = "etcd-v3.4.23-linux-amd64.tar.gz"


def tarball() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name in ("etcd-v3.4.23-linux-amd64/etcd", "etcd-v3.4.23-linux-amd64/etcdctl", "etcd-v3.4.23-linux-amd64/README.md"):
            data = f"{name} program ".encode() * 50_000  # ~1.5 MB each, so a resume has something to skip
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[MirrorServer]:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / FILE).write_bytes(tarball())
    with MirrorServer(tmp_path / "www") as server:
        yield server


def etcd_release(url: str, sha256: str, bin_dir: Path) -> Release:
    spec = ReleaseSpec("etcd", "3.4.23", (("etcd", str(bin_dir / "etcd")), ("etcdctl", str(bin_dir / "etc dctl'q"))))
    return Release(spec, Resolved(FILE, url, sha256))


def node_script(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs a rendered node command as the node runs it: bash, as root."""
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=120)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_node_script_downloads_verifies_and_installs_each_program_once(mirror: MirrorServer, tmp_path: Path) -> None:
    data = (tmp_path / "www" / FILE).read_bytes()
    release = etcd_release(f"{mirror.url}/{FILE}", sha(data), tmp_path / "bin")
    cache = str(tmp_path / "cache")
    first = node_script(install_command(release, cache=cache), tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    report = parse_report(first.stdout, NodeReleases())
    assert sorted(report.changed) == sorted(release.paths)
    members = {"etcd": b"etcd-v3.4.23-linux-amd64/etcd program ", "etcdctl": b"etcd-v3.4.23-linux-amd64/etcdctl program "}
    installed = {path: sha(members[name] * 50_000) for name, path in release.spec.targets}
    assert report.installed == installed
    assert all(oct(Path(p).stat().st_mode & 0o777) == "0o755" for p in release.paths)
    assert sorted(p.name for p in Path(cache).iterdir()) == [sha(data), f"{release.key}.installed"]
    manifest = Path(cache) / f"{release.key}.installed"  # the operator records its sum from `installed`, in this order
    assert manifest.read_text() == "".join(f"{installed[path]}  {path}\n" for path in release.paths)
    assert {oct(f.stat().st_mode & 0o777) for f in Path(cache).iterdir()} == {"0o644"}
    progress = [line.split()[1:] for line in first.stdout.splitlines() if line.startswith("khwtui-progress")]
    assert progress[-1] == [str(len(data)), str(len(data))]

    again = node_script(install_command(release, cache=cache), tmp_path)
    assert again.returncode == 0 and "khwtui-changed" not in again.stdout and "khwtui-progress" not in again.stdout
    assert mirror.hits[f"/{FILE}"] == 1  # the node's verified cache: downloaded once
    status = parse_report(node_script(status_command([release], cache=cache), tmp_path).stdout, NodeReleases())
    assert status.status == {release.key: "ok"} and status.installed == installed

    Path(release.paths[0]).write_bytes(b"edited by hand")
    status = parse_report(node_script(status_command([release], cache=cache), tmp_path).stdout, NodeReleases())
    assert status.status == {release.key: "cached"}


def test_a_tampered_file_with_the_pinned_sum_unchanged_is_refused_and_nothing_is_installed(mirror: MirrorServer, tmp_path: Path) -> None:
    pinned = sha(b"the file the config pinned")
    release = etcd_release(f"{mirror.url}/{FILE}", pinned, tmp_path / "bin")
    done = node_script(install_command(release, cache=str(tmp_path / "cache")), tmp_path)
    assert done.returncode == 3
    refused = [line for line in done.stdout.splitlines() if line.startswith("khwtui-refused")]
    assert refused == [f"khwtui-refused {sha((tmp_path / 'www' / FILE).read_bytes())}"]
    assert not (tmp_path / "bin").exists() and list((tmp_path / "cache").iterdir()) == []
    error = str(install_error("controller-0", release, done.returncode, refused))
    assert error.startswith(f"controller-0 refused {FILE} from {mirror.url}/{FILE}: its SHA-256 is ")
    assert f"expected {pinned}; nothing of it was installed; fix: " in error and "\n" not in error


def test_a_partial_download_resumes_where_it_stopped(mirror: MirrorServer, tmp_path: Path) -> None:
    data = (tmp_path / "www" / FILE).read_bytes()
    release = etcd_release(f"{mirror.url}/{FILE}", sha(data), tmp_path / "bin")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{sha(data)}.part").write_bytes(data[: len(data) // 2])
    done = node_script(install_command(release, cache=str(tmp_path / "cache")), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert mirror.resumed == [(f"/{FILE}", len(data) // 2)]
    assert (tmp_path / "cache" / sha(data)).read_bytes() == data


def test_an_unreachable_url_fails_with_curls_cause_and_installs_nothing(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:9/{FILE}"  # the discard port: nothing listens
    release = etcd_release(url, sha(b"x"), tmp_path / "bin")
    done = node_script(install_command(release, cache=str(tmp_path / "cache")), tmp_path)
    assert done.returncode == 5
    failed = [line for line in done.stdout.splitlines() if line.startswith("khwtui-failed")]
    assert failed and failed[0].startswith("khwtui-failed 7 ")
    assert not (tmp_path / "bin").exists() and list((tmp_path / "cache").iterdir()) == []
    error = str(install_error("worker-1", release, done.returncode, failed))
    assert error.startswith(f"worker-1 could not download {url} (curl exit 7: ")
    assert error.endswith('fix: give the node outbound access to that host, set binaries.mirror to a mirror the nodes reach, '
                          'or set binaries.delivery = "push"')


def test_a_pushed_file_is_verified_and_moved_into_the_cache(tmp_path: Path) -> None:
    data = tarball()
    staged = tmp_path / ".khwtui" / "put" / "0123"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(data)
    release = etcd_release("http://127.0.0.1:9/never-fetched", sha(data), tmp_path / "bin")
    done = node_script(install_command(release, staged=".khwtui/put/0123", cache=str(tmp_path / "cache")), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not staged.exists() and (tmp_path / "cache" / sha(data)).read_bytes() == data
    assert "khwtui-progress" not in done.stdout


def test_every_value_in_the_node_commands_is_quoted() -> None:
    release = etcd_release("http://m/x;rm -rf /", "a" * 64, Path("/opt/b i n"))
    assert shlex.quote("http://m/x;rm -rf /") in install_command(release)
    command = install_command(release, staged="s p$(x)")
    assert shlex.quote("s p$(x)") in command
    assert shlex.quote("/opt/b i n/etc dctl'q") in command
    assert shlex.quote("/opt/b i n/etcd\n/opt/b i n/etc dctl'q") in status_command([release])


# --- the choice -------------------------------------------------------------------------------------


def test_auto_pushes_when_local_nodes_have_no_outbound_and_plan_says_why() -> None:
    offline = config_mod.from_dict(local_raw(local={"outbound": False}))
    assert fixed_choice(offline).mode == PUSH
    assert plan_line(offline) == "Binary delivery: push (auto: local.outbound = false, so the nodes cannot reach the release origin)"
    assert fixed_choice(config_mod.from_dict(local_raw(local={"outbound": False}, binaries={"delivery": "node"}))).mode == NODE
    assert fixed_choice(config_mod.from_dict(local_raw(local={"outbound": True}))) is None
    assert plan_line(config_mod.from_dict(local_raw(local={"outbound": True}))).startswith("Binary delivery: auto (node if every node")


def test_a_delivery_mode_that_does_not_exist_is_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r'^binaries.delivery: \'nodes\' is not a delivery mode; fix: use "auto", "node"'):
        config_mod.from_dict(local_raw(binaries={"delivery": "nodes"}))


async def test_auto_picks_node_when_every_node_reaches_the_origin_and_push_naming_the_one_that_does_not(tmp_path: Path) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(local={"outbound": True}), remote=remote)
    urls = ["http://10.1.2.3:8080/etcd/x.tar.gz", "http://10.1.2.3:8080/runc/runc", "https://dl.example/k/kubelet"]
    nodes = ["controller-0", "worker-0", "worker-1"]
    reached = await probe(run, nodes, urls)
    assert reached.mode == NODE and reached.reason == "auto: every node reaches http://10.1.2.3:8080/etcd/x.tar.gz, https://dl.example/k/kubelet"
    assert len(remote.sent) == 6  # one HEAD per node and origin, not per file
    remote.answer(r"dl\.example", stderr="curl: (6) Could not resolve host: dl.example\n", exit_status=6)
    blocked = await probe(run, nodes, urls)
    assert blocked.mode == PUSH
    assert blocked.reason == "auto: controller-0 cannot fetch https://dl.example/k/kubelet (curl: (6) Could not resolve host: dl.example)"


# --- the operator's cache (push) --------------------------------------------------------------------


def test_the_operator_streams_a_file_into_its_cache_and_keeps_only_a_verified_one(mirror: MirrorServer, tmp_path: Path) -> None:
    data = (tmp_path / "www" / FILE).read_bytes()
    binaries = Binaries(config_mod.from_dict(local_raw()), tmp_path / "downloads")
    artifact = binaries.fetch_resolved(Resolved(FILE, f"{mirror.url}/{FILE}", sha(data)))
    assert artifact.path.read_bytes() == data and artifact.size == len(data)
    with pytest.raises(ChecksumMismatch, match="downloaded on this machine, has SHA-256"):
        binaries.fetch_resolved(Resolved(FILE, f"{mirror.url}/{FILE}", sha(b"pinned")))
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == [artifact.path.name]
    with pytest.raises(DownloadFailed) as failed:
        binaries.fetch_resolved(Resolved(FILE, "http://127.0.0.1:9/x.tar.gz", sha(b"x")))
    assert str(failed.value).startswith("downloading http://127.0.0.1:9/x.tar.gz on this machine failed (")
    assert "fix: " in str(failed.value) and "binaries.mirror" in str(failed.value)


def test_two_runs_downloading_the_same_file_at_once_both_get_it_verified(tmp_path: Path) -> None:
    """Two khwtui processes (two clusters built at once) share the operator's cache: each streams
    into its own partial file, so neither moves or truncates the other's."""
    data = tarball()
    both_reading = threading.Barrier(2, timeout=30)

    @contextlib.contextmanager
    def opener(url: str) -> Iterator[io.BytesIO]:
        response = io.BytesIO(data)
        first = response.read(len(data) // 2)
        both_reading.wait()  # both have opened their partial file and written half of it
        yield io.BytesIO(first + response.read())

    binaries = Binaries(config_mod.from_dict(local_raw()), tmp_path / "downloads", opener=opener)
    resolved = Resolved(FILE, f"http://127.0.0.1:9/{FILE}", sha(data))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        artifacts = list(pool.map(lambda _: binaries.fetch_resolved(resolved), range(2)))
    assert [a.path.read_bytes() == data for a in artifacts] == [True, True]
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == [artifacts[0].path.name]


# --- --auto -----------------------------------------------------------------------------------------


def test_auto_prints_a_transfer_at_its_start_every_quarter_and_its_end() -> None:
    out = io.StringIO()
    sink = ConsoleSink(out)
    for done in range(0, 101, 5):
        sink(TransferProgress("worker-0", "workers", "kubelet", "node", done * 1_000_000, 100_000_000, 5_000_000.0))
    assert out.getvalue().splitlines() == [
        "      worker-0 download kubelet 0% (0.0 MB of 100.0 MB, 5.0 MB/s, ETA 20 s)",
        "      worker-0 download kubelet 25% (25.0 MB of 100.0 MB, 5.0 MB/s, ETA 15 s)",
        "      worker-0 download kubelet 50% (50.0 MB of 100.0 MB, 5.0 MB/s, ETA 10 s)",
        "      worker-0 download kubelet 75% (75.0 MB of 100.0 MB, 5.0 MB/s, ETA 5 s)",
        "      worker-0 download kubelet 100% (100.0 MB of 100.0 MB, 5.0 MB/s)",
    ]


def test_one_file_under_two_names_is_downloaded_once_and_each_name_stays_in_place(mirror: MirrorServer, tmp_path: Path) -> None:
    data = (tmp_path / "www" / FILE).read_bytes()
    spec = ReleaseSpec("kubernetes", "1.35.4", (("etcd", str(tmp_path / "bin" / "a")),))
    first = Release(spec, Resolved(FILE, f"{mirror.url}/{FILE}", sha(data)))
    second = Release(ReleaseSpec("kubernetes", "1.35.4", (("etcd", str(tmp_path / "bin" / "b")),)), first.source)
    cache = str(tmp_path / "cache")
    for release in (first, second):
        assert node_script(install_command(release, cache=cache), tmp_path).returncode == 0
    status = parse_report(node_script(status_command([first, second], cache=cache), tmp_path).stdout, NodeReleases())
    assert status.status == {first.key: "ok", second.key: "ok"} and first.key != second.key
    assert mirror.hits[f"/{FILE}"] == 1
