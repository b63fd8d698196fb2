"""`khwtui plan`: every resolved value, the nodes and resources, the cost — and nothing written."""

from __future__ import annotations

import re
from pathlib import Path

from khwtui.cli import main


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
