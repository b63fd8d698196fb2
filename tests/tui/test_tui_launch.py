"""The services launch.py wires into the app, on a real state folder: health rounds of
khwtui.engine.health, the `khwtui certs` rows, a node's pinned endpoint, the provider's teardown and
the gcp cost estimate."""

from __future__ import annotations

import tomli_w

from khwtui.artifacts.pki import Pki
from khwtui.core.errors import StateError
from khwtui.core.events import PASSED
from khwtui.model.cluster import open_cluster
from khwtui.model.state import NodeRecord, StageRecord
from khwtui.providers.base import PlannedResource
from khwtui.tui import launch

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM6Pw1hQ7i2y0oXcWmB6mP8y4x1Jm4rC2v6f1nXz0aQk"


def cluster_at(tmp_path, monkeypatch, kind: str = "local"):
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    raw = {"cluster": {"name": "khw-launch"}, "provider": {"kind": kind}, "pki": {"key_type": "ecdsa-p256"}}
    if kind == "gcp":
        raw["gcp"] = {"project": "khw-demo-1234", "region": "us-west1", "zone": "us-west1-c"}
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "cluster.toml"
    path.write_text(tomli_w.dumps(raw))
    cluster = open_cluster(str(path), str(tmp_path / "state"))
    cluster.state_dir.ensure_layout()
    return cluster


async def test_a_health_round_probes_the_done_stages_and_nothing_else(tmp_path, monkeypatch) -> None:
    cluster = cluster_at(tmp_path, monkeypatch)
    assert await launch.probe_round(cluster) == []  # nothing done: nothing probed, no connection made
    Pki(cluster.state_dir.pki_dir, cluster.config).ensure(cluster.topology)
    cluster.state.stages["pki"] = StageRecord(PASSED)
    [result] = await launch.probe_round(cluster)  # the pki probe reads the certificates offline
    assert (result.probe, result.result, result.node) == ("pki:certificates", PASSED, "")
    assert result.detail.endswith("days left (admin)") and result.latency_ms is not None
    assert not list(cluster.state_dir.logs_dir.iterdir())  # a round writes no node log


def test_certificates_are_the_rows_of_khwtui_certs(tmp_path, monkeypatch) -> None:
    cluster = cluster_at(tmp_path, monkeypatch)
    pki = Pki(cluster.state_dir.pki_dir, cluster.config)
    pki.ensure(cluster.topology)
    assert [r.name for r in launch.cert_rows(cluster)] == [r.name for r in pki.rows(cluster.topology)]


def test_a_shell_target_is_the_nodes_pinned_endpoint(tmp_path, monkeypatch) -> None:
    cluster = cluster_at(tmp_path, monkeypatch)
    assert launch.shell_target(cluster, "controller-0") is None  # before the compute stage
    cluster.state.nodes["controller-0"] = NodeRecord("controller-0", "controller", "10.240.0.10", ssh_host="10.77.0.10", ssh_port=22, host_key=HOST_KEY)
    target = launch.shell_target(cluster, "controller-0")
    assert (target.host, target.port, target.user, target.host_key) == ("10.77.0.10", 22, "khwtui", HOST_KEY)
    assert target.key_path == cluster.state_dir.ssh_dir / "id_ed25519" and target.key_path.is_file()


async def test_teardown_deletes_what_the_plan_listed_under_the_lock_and_forgets_the_nodes(tmp_path, monkeypatch) -> None:
    cluster = cluster_at(tmp_path, monkeypatch)
    cluster.state.nodes["controller-0"] = NodeRecord("controller-0", "controller", "10.240.0.10", host_key=HOST_KEY)
    cluster.state.stages["compute"] = StageRecord(PASSED)
    cluster.state_dir.save(cluster.state)
    made = []

    class Provider:
        def teardown_plan(self):
            return [PlannedResource("netns", "khwl-controller-0")]

        async def teardown(self, log):
            log("deleted netns khwl-controller-0")
            try:
                with cluster.state_dir.lock():
                    made.append("the lock was free")
            except StateError:
                made.append("locked")

    monkeypatch.setattr("khwtui.providers.factory.make_provider", lambda c: made.append("provider") or Provider())
    teardown = launch.ClusterTeardown(cluster)
    assert teardown.teardown_plan() == [PlannedResource("netns", "khwl-controller-0")]
    lines: list[str] = []
    await teardown.teardown(lines.append)
    assert lines == ["deleted netns khwl-controller-0"]
    assert made == ["provider", "locked"]  # one provider for the plan and the deletion, under the lock
    saved = cluster.state_dir.load()
    assert saved.nodes == {} and saved.stages["compute"].detail == "torn down"


def test_the_running_cost_is_the_gcp_estimate_while_nodes_exist(tmp_path, monkeypatch) -> None:
    assert launch.hourly_cost(cluster_at(tmp_path / "local", monkeypatch)) is None
    cluster = cluster_at(tmp_path, monkeypatch, kind="gcp")
    cost = launch.hourly_cost(cluster)
    assert cost() is None  # nothing built: nothing costs
    cluster.state.nodes["controller-0"] = NodeRecord("controller-0", "controller", "10.240.0.10")
    from khwtui.providers.factory import make_provider

    assert cost() == make_provider(cluster).plan().hourly_usd > 0


def test_the_api_address_is_read_from_the_state_as_the_engine_saves_it(tmp_path, monkeypatch) -> None:
    cluster = cluster_at(tmp_path, monkeypatch, kind="gcp")
    address = launch.services(cluster).api_address
    assert address() is None  # compute has not reserved the static address yet
    cluster.state.public_address = "34.83.1.2"
    assert address() == "34.83.1.2"
