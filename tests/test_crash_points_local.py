"""A run SIGKILLed at any named crash point resumes to the new configuration (issue 15).

One local 1 + 2 (+ lb) cluster, built once, serves every test here, in file order. Each crash
point gets a change between runs that the next run must carry to a node (a re-issued certificate,
a drifted file, a package left unpacked as a kill mid-dpkg leaves it), then a run with
KHWTUI_CRASH_AT set dies at that point, `status` shows every restart the kill left due as failed,
and the next `up` converges with the unit really running the new configuration: etcd and the
apiserver present the re-issued certificate (read with `openssl s_client`), haproxy serves its
stats page again, and every unit restarted after its new files landed.

The first test is the issue's own case without a crash point, so it also runs on code that has
none: haproxy's new configuration placed, the run gone right before the reload.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from localcluster import LocalCluster
from workerbed import NodeShell, shells, standin_nodes, unit_starts

from khwtui.artifacts.frontend_files import CONFIG as HAPROXY_CONFIG
from khwtui.artifacts.frontend_files import STATS_PORT
from khwtui.artifacts.workers_files import CONTAINERD_CONFIG, KUBE_PROXY_CONFIG, ROUTES_UNIT, unit_path
from khwtui.console.headless import ConsoleSink
from khwtui.core import crashpoints
from khwtui.engine.runner import Engine
from khwtui.model.cluster import open_cluster
from khwtui.stages import STAGES
from khwtui.stages.frontend import STATS, parse_backends
from khwtui.toolkit.run_context import RunContext

pytestmark = pytest.mark.integration

UNTIL = ("up", "--auto", "--until", "routes")
CONVERGED = (0, 3)  # rbac and the workers' Ready stay unverified with the stand-ins; nothing failed
PENDING = "configuration changed, restart pending"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict) -> Iterator[LocalCluster]:
    with standin_nodes(tmp_path_factory, release_mirror, "crash") as c:
        built = c.khwtui(*UNTIL)
        assert built.returncode == 3, built.stdout[-3000:] + built.stderr
        yield c


def node(c: LocalCluster, name: str) -> NodeShell:
    return shells(c.state_dir)[name]


def backend_states(c: LocalCluster) -> dict[str, str]:
    """controller -> haproxy's status of it, from the stats page on the lb's STATS_PORT."""
    return {name: b.status for name, b in parse_backends(node(c, "lb").run(STATS).stdout).items()}


def serve_stats_elsewhere(c: LocalCluster) -> None:
    """haproxy runs a configuration whose stats page is not where khwtui's says: the next run
    places khwtui's again, and only a reload makes haproxy serve it."""
    lb = node(c, "lb")
    lb.run(f"sed -i 's/127.0.0.1:{STATS_PORT}/127.0.0.1:{STATS_PORT + 1}/' {HAPROXY_CONFIG} && systemctl restart haproxy")
    assert lb.run(STATS, check=False).returncode != 0


def assert_haproxy_serves_the_new_configuration(c: LocalCluster) -> None:
    assert backend_states(c) == {"controller-0": "UP"}


def due_restarts(c: LocalCluster) -> set[tuple[str, str]]:
    return {(name, unit) for name, record in c.state()["nodes"].items() for unit in record.get("restarts", {})}


# --- the case: the run gone between haproxy's new file and its reload ------------------------


class Died(BaseException):
    """The process is gone: nothing after this point runs, nothing is cleaned up (no `except Exception`
    catches it, so the engine saves nothing more, as after a SIGKILL)."""


async def test_haproxy_placed_but_not_reloaded_when_the_run_died_is_reloaded_by_the_next_run(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    serve_stats_elsewhere(cluster)
    real = RunContext.sh

    async def dies_before_a_restart(self: RunContext, name: str, command: str, **kwargs):
        if command.startswith(("systemctl reload-or-restart", "systemctl restart")):
            raise Died(command)
        return await real(self, name, command, **kwargs)

    monkeypatch.setattr(RunContext, "sh", dies_before_a_restart)
    with pytest.raises(Died, match="haproxy"):
        await Engine(open_cluster(str(cluster.config_path), str(cluster.state_dir))).run(ConsoleSink(io.StringIO()), only=["frontend"])
    monkeypatch.undo()
    assert node(cluster, "lb").run(STATS, check=False).returncode != 0  # the new file is there, haproxy still runs the old one

    resumed = cluster.khwtui("up", "--auto", "--only", "frontend")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr
    assert_haproxy_serves_the_new_configuration(cluster)
    assert due_restarts(cluster) == set()


# --- every crash point ------------------------------------------------------------------------------


def reissue(name: str) -> Callable[[LocalCluster], None]:
    """The pki stage makes `name`'s certificate again (a new serial) on the next run."""
    return lambda c: (c.state_dir / "pki" / f"{name}.pem").unlink()


def serial_of(c: LocalCluster, name: str) -> str:
    pem = (c.state_dir / "pki" / f"{name}.pem").read_bytes()
    return subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem, capture_output=True, check=True).stdout.decode().strip()


def presents(name: str, node_name: str, port: int) -> Callable[[LocalCluster], None]:
    """The server at node:port presents certificate `name` as it is now in the state folder."""

    def check(c: LocalCluster) -> None:
        address = c.state()["nodes"][node_name]["internal_ip"]
        shown = subprocess.run(["openssl", "s_client", "-connect", f"{address}:{port}"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30).stdout
        served = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=shown, capture_output=True).stdout.decode().strip()
        assert served == serial_of(c, name), f"{node_name}:{port} presents {served or 'nothing'}"

    return check


def append_to(node_name: str, *paths: str) -> Callable[[LocalCluster], None]:
    """The files differ on the node: the next run puts khwtui's back (a change its units must restart for)."""
    return lambda c: node(c, node_name).run("; ".join(f"echo '# drift' >> {p}" for p in paths))


def leave_haproxy_unpacked(c: LocalCluster) -> None:
    """haproxy purged, then its .deb unpacked and never configured: what a node that went down
    mid-dpkg leaves (its binary is on PATH, its user and postinst are not)."""
    lb = node(c, "lb")
    lb.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q haproxy && cd /tmp && apt-get download -q haproxy && dpkg --unpack haproxy_*.deb && rm haproxy_*.deb", timeout=600)
    assert lb.run("dpkg-query -W -f='${db:Status-Status}' haproxy").stdout == "unpacked"


def nothing(c: LocalCluster) -> None:
    """No change: the point itself is what is tried."""


@dataclass(frozen=True)
class Point:
    name: str
    until: str  # both runs: `up --auto --only` pki up to this stage (compute has nothing to change here)
    change: Callable[[LocalCluster], None]
    due: frozenset[tuple[str, str]]  # (node, unit) restarts the kill leaves due
    serving: Callable[[LocalCluster], None]  # the unit runs the new configuration
    reloads: bool = False  # the units reload in place (haproxy): `serving` is the proof, not a new start

    @property
    def up(self) -> tuple[str, ...]:
        names = [s.name for s in STAGES]
        return ("up", "--auto", "--only", ",".join(names[names.index("pki") : names.index(self.until) + 1]))

    def __str__(self) -> str:
        return self.name


def both(*changes: Callable[[LocalCluster], None]) -> Callable[[LocalCluster], None]:
    def change_all(c: LocalCluster) -> None:
        for change in changes:
            change(c)

    return change_all


POINTS = [
    Point("etcd.placed", "etcd", reissue("kubernetes"), frozenset({("controller-0", "etcd")}), presents("kubernetes", "controller-0", 2379)),
    Point("control-plane.placed", "control-plane", reissue("kubernetes"), frozenset({("controller-0", "kube-apiserver")}), presents("kubernetes", "controller-0", 6443)),
    Point("frontend.placed", "frontend", serve_stats_elsewhere, frozenset({("lb", "haproxy")}), assert_haproxy_serves_the_new_configuration, reloads=True),
    Point("workers.placed", "workers", both(reissue("worker-0"), append_to("worker-0", CONTAINERD_CONFIG, KUBE_PROXY_CONFIG)),
          frozenset({("worker-0", "containerd"), ("worker-0", "kubelet"), ("worker-0", "kube-proxy")}), nothing),
    Point("routes.placed", "routes", append_to("worker-0", unit_path(ROUTES_UNIT)), frozenset({("worker-0", ROUTES_UNIT)}), nothing),
    Point("apt.started", "frontend", leave_haproxy_unpacked, frozenset(), assert_haproxy_serves_the_new_configuration),
    Point("state.save", "pki", nothing, frozenset(), nothing),
]


def test_every_crash_point_is_tried_here_or_in_the_gcp_chaos_test() -> None:
    """gcp.insert-sent: tests/test_chaos_gcp_local.py; rollout.next-node: tests/test_day2_local.py's renewal."""
    assert {p.name for p in POINTS} | {"gcp.insert-sent", "rollout.next-node"} == set(crashpoints.POINTS)


@pytest.mark.parametrize("point", POINTS, ids=str)
def test_a_run_killed_at_the_point_resumes_and_the_unit_runs_the_new_configuration(cluster: LocalCluster, point: Point) -> None:
    point.change(cluster)
    killed = cluster.khwtui(*point.up, env={crashpoints.ENV: point.name})
    assert killed.returncode == -signal.SIGKILL, f"the run did not die at {point}: {killed.stdout[-3000:]}{killed.stderr}"
    assert due_restarts(cluster) == point.due  # state.toml parses, and holds what is due
    if point.name == "state.save":
        assert list(cluster.state_dir.glob(".state.toml.*.tmp")), "the kill came before the temp file was written"
    started = {(n, u): unit_starts(node(cluster, n), [u]) for n, u in point.due}

    if point.due:
        status = cluster.khwtui("status", "--json")
        assert status.returncode == 1, status.stdout[-3000:] + status.stderr
        probes = [json.loads(line) for line in status.stdout.splitlines()]
        failed = {(e["node"], e["probe"].split(":", 1)[1].removesuffix(" restarted")) for e in probes
                  if e["kind"] == "health" and e["result"] == "failed" and e["detail"].endswith(PENDING)}
        assert point.due <= failed, status.stdout[-3000:]

    resumed = cluster.khwtui(*point.up)
    assert resumed.returncode in CONVERGED, resumed.stdout[-3000:] + resumed.stderr
    assert due_restarts(cluster) == set()
    if not point.reloads:
        for (n, u), before in started.items():
            assert unit_starts(node(cluster, n), [u]) != before, f"{u} on {n} was not restarted"
    point.serving(cluster)
    assert not list(cluster.state_dir.glob(".state.toml.*.tmp"))
