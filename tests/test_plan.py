"""`khwtui plan`: every resolved value, the nodes and resources, the cost — and nothing written."""

from __future__ import annotations

import re
from pathlib import Path

from khwtui.cli.command_line import main


def test_plan_prints_settings_nodes_resources_and_cost_and_writes_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("CLOUDSDK_COMPUTE_REGION", "europe-west1")
    monkeypatch.delenv("CLOUDSDK_COMPUTE_ZONE", raising=False)
    state = tmp_path / "state"
    assert main(["plan", "--config", "configs/ha.toml", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "gcp.region                   europe-west1" in out and "environment CLOUDSDK_COMPUTE_REGION" in out
    assert "europe-west1-c" in out and "derived from gcp.region" in out
    for name in ("controller-0", "controller-2", "worker-2"):
        assert re.search(rf"^instance +{name} ", out, re.M)
    assert re.search(r"^forwarding rule +kthw-ha-forwarding-rule +the static address:6443 to kthw-ha-target-pool \(frontend stage\)$", out, re.M)
    assert "Estimated cost: $" in out and "as of 2025-03-06" in out
    assert "warning: gcp.admin_cidrs allows 0.0.0.0/0" in out
    assert not state.exists()


DEBIAN_BED = """
[cluster]
name = "debian-bed"
kubernetes_version = "1.35.4"
[topology]
controllers = 2
workers = 2
[versions]
etcd = "3.4.23"
containerd = "1.6.20"
"""


def test_plan_warns_about_an_even_etcd_quorum_and_debians_versions_below_upstreams_floors(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    (tmp_path / "bed.toml").write_text(DEBIAN_BED)
    assert main(["plan", "--config", str(tmp_path / "bed.toml"), "--state-dir", str(tmp_path / "state")]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: ")]
    assert "warning: 2 controllers make an etcd cluster of 2 members, which tolerates 0 lost members, no more than 1 would; " \
           "an odd count such as 3 adds tolerance" in warnings
    assert "warning: versions.etcd 3.4.23 is below 3.5.13+, 3.4.31+, which the API server's consistent reads from its cache " \
           "(KEP-2340) need; use etcd 3.5.13 or newer" in warnings
    assert "warning: versions.containerd 1.6.20 is not among the releases containerd supports for Kubernetes 1.35 " \
           "(2.2.0+, 2.1.5+, 1.7.28+); use one of those" in warnings
