"""SVG snapshots of the screens of tests/tui/scenes.py (the README's screenshots), each with the
content its picture must show. `snap_compare` runs its own event loop, hence plain `def` tests."""

from __future__ import annotations

import re
from collections.abc import Callable

from textual.pilot import Pilot
from textual.widgets import Button, Input

from khwtui.tui.app import KhwApp
from khwtui.tui.certs_screen import CertsScreen, CertTable
from khwtui.tui.explain_screen import ExplainScreen
from khwtui.tui.node_log import NodeLogScreen, WrappedLog
from khwtui.tui.teardown_screen import ConfirmTeardown

from .fake_services import AGED
from .scenes import COST, SCENES, Scene, node_log_lines
from .support import row

BY_NAME = {scene.name: scene for scene in SCENES}


def shoot(snap_compare, tmp_path, name: str, look: Callable[[KhwApp], dict[str, object]]) -> dict[str, object]:
    """Snapshot scene `name`; returns what `look` read from the app just before the capture."""
    scene: Scene = BY_NAME[name]
    seen: dict[str, object] = {}

    async def prepare(pilot: Pilot) -> None:
        await scene.prepare(pilot)
        seen.update(look(pilot.app))

    assert snap_compare(scene.build(tmp_path), terminal_size=scene.size, run_before=prepare)
    return seen


def main_screen(app: KhwApp) -> dict[str, object]:
    return {
        "marks": "".join(row(app, name)["mark"] for name in app.progress.stages),
        "header": str(app.header.right).strip(),
        "health": app.health_panel.plain.splitlines() if app.health_panel.display else None,
        "health status": app.health_panel.status,
    }


def test_build_in_progress(snap_compare, tmp_path) -> None:
    seen = shoot(snap_compare, tmp_path, "build-in-progress", main_screen)
    assert seen["marks"] == "✔✔✔✔⟳" + "·" * 8
    assert seen["header"] == f"⟳ etcd · 4/13 stages · ● probes ok · 0:58 · ${COST:.2f}/h"
    assert [line.split()[1] for line in seen["health"][::2]] == ["ssh", "certificates"]


def test_failed_stage_with_its_log(snap_compare, tmp_path) -> None:
    def look(app: KhwApp) -> dict[str, object]:
        return {**main_screen(app), "title": app.log_pane.title, "last": app.log_pane.lines[-1]}

    seen = shoot(snap_compare, tmp_path, "failed-stage", look)
    assert seen["marks"] == "✔✔✔✔✖" + "·" * 8
    assert seen["title"] == "Log · controller-1 · etcd (Esc: all)"
    assert seen["last"].endswith("✖   https://127.0.0.1:2379 is unhealthy: failed to commit proposal: context deadline exceeded")


def test_healthy_cluster_with_the_health_panel(snap_compare, tmp_path) -> None:
    seen = shoot(snap_compare, tmp_path, "healthy", main_screen)
    assert seen["marks"] == "✔" * 13
    assert seen["header"] == f"✔ 13/13 stages · ● probes ok · ${COST:.2f}/h"
    assert seen["health status"] == "round 1 · 21:52:53"
    assert seen["health"][0::2] == [
        "✔ ssh and sudo                     4/4",
        "✔ certificates   364 days left (admin)",
        "✔ etcd                             2/2",
        "✔ apiserver /livez and /readyz     2/2",
    ]


def test_a_failing_probe(snap_compare, tmp_path) -> None:
    def look(app: KhwApp) -> dict[str, object]:
        return {**main_screen(app), "node": app.node_tree.label_of("controller-1"), "etcd": row(app, "etcd")["detail"]}

    seen = shoot(snap_compare, tmp_path, "probe-failing", look)
    assert seen["marks"] == "✔✔✔✔✖" + "✔" * 8
    assert seen["header"] == f"✔ 13/13 stages · ✖ 1 probe failing · ${COST:.2f}/h"
    assert seen["node"] == "✖ controller-1 10.240.0.11 · etcd failing"
    assert seen["etcd"] == "probe failing: controller-1: etcd — context deadline exceeded"
    assert seen["health"][4:8] == [
        "✖ etcd                             1/2",
        "  5012 ms · 21:52:58",
        "  controller-1: context deadline",
        "  exceeded",
    ]


def test_certificates(snap_compare, tmp_path) -> None:
    def look(app: KhwApp) -> dict[str, object]:
        screen = app.screen
        assert isinstance(screen, CertsScreen)
        return {"summary": screen.summary, "table": screen.query_one(CertTable).plain.splitlines()}

    seen = shoot(snap_compare, tmp_path, "certificates", look)
    assert seen["summary"] == "2 of 11 need attention: worker-1 (renew soon), kube-proxy (renew soon)"
    marked = {line.split()[1]: line.split()[0] for line in seen["table"] if line[:1] in ("✔", "!", "✖")}
    assert [name for name, mark in marked.items() if mark == "!"] == list(AGED)
    assert len(marked) == 11 and seen["table"][0].split() == ["name", "not", "after", "days", "left", "status"]
    assert "  CN: system:kube-proxy · O: system:node-proxier" in seen["table"]  # below its name at 120 columns


def test_teardown_confirmation(snap_compare, tmp_path) -> None:
    def look(app: KhwApp) -> dict[str, object]:
        screen = app.screen
        assert isinstance(screen, ConfirmTeardown)
        return {
            "plan": len(screen.plan),
            "question": screen.question,
            "delete disabled": screen.query_one("#delete", Button).disabled,
            "focus": type(screen.focused),
            "teardowns": app.services.teardown.teardowns,
        }

    seen = shoot(snap_compare, tmp_path, "teardown", look)
    assert seen == {
        "plan": 16,
        "question": "Delete cluster kubernetes-the-hard-way? These 16 resources go, with everything on them:",
        "delete disabled": True,
        "focus": Input,
        "teardowns": 0,
    }


def test_node_log(snap_compare, tmp_path) -> None:
    def look(app: KhwApp) -> dict[str, object]:
        screen = app.screen
        assert isinstance(screen, NodeLogScreen)
        return {"node": screen.node, "lines": screen.query_one(WrappedLog).source}

    seen = shoot(snap_compare, tmp_path, "node-log", look)
    assert seen == {"node": "controller-1", "lines": node_log_lines("gcp_etcd_failed", "controller-1")}


def test_80x24_with_the_health_panel_folded_under_the_log(snap_compare, tmp_path) -> None:
    def look(app: KhwApp) -> dict[str, object]:
        return {**main_screen(app), "fold": (app.health_panel.region.y >= app.log_pane.region.bottom, app.health_panel.region.width)}

    seen = shoot(snap_compare, tmp_path, "healthy-80x24", look)
    assert seen["fold"] == (True, 80)
    assert [line.split()[0] for line in seen["health"]] == ["✔"] * 4


def test_80x24_failed_stage(snap_compare, tmp_path) -> None:
    seen = shoot(snap_compare, tmp_path, "failed-stage-80x24", main_screen)
    assert seen["marks"] == "✔✔✔✔✖" + "·" * 8
    assert seen["health"] is None  # folded away until h


def explanation(app: KhwApp) -> dict[str, object]:
    screen = app.screen
    assert isinstance(screen, ExplainScreen)
    return {"title": screen.query_one("#dialog").border_title, "text": screen.text, "top": screen.area.scroll_y}


def test_a_cloud_stage_explained(snap_compare, tmp_path) -> None:
    seen = shoot(snap_compare, tmp_path, "explain-compute", explanation)
    assert seen["title"] == "Explain · compute" and seen["top"] == 0
    text = str(seen["text"])
    assert text.startswith("1. compute — network, nodes, SSH with pinned host keys\n") and "KTHW lab 03" in text
    assert re.search(r"^instance +worker-1 +worker, e2-standard-2, debian-cloud/debian-12, 50 GB disk, 10.240.0.21", text, re.M)
    assert "gcloud compute instances create worker-1 --zone=us-west1-c" in text and "--private-network-ip=10.240.0.21" in text


def test_a_node_stage_explained(snap_compare, tmp_path) -> None:
    seen = shoot(snap_compare, tmp_path, "explain-etcd", explanation)
    text = str(seen["text"])
    assert seen["title"] == "Explain · etcd"
    assert "--initial-cluster controller-0=https://10.240.0.10:2380,controller-1=https://10.240.0.11:2380" in text
    assert "    -  --name controller-0 \\\n    +  --name controller-1 \\" in text  # where the nodes differ
    assert "/etc/etcd/kubernetes-key.pem — 0600 root:root" in text and "PRIVATE KEY" not in text


def test_a_cloud_stage_explained_at_80_columns(snap_compare, tmp_path) -> None:
    seen = shoot(snap_compare, tmp_path, "explain-compute-80x24", explanation)
    assert seen["title"] == "Explain · compute" and seen["top"] == 0


def test_a_node_stage_explained_at_80_columns(snap_compare, tmp_path) -> None:
    seen = shoot(snap_compare, tmp_path, "explain-etcd-80x24", explanation)
    assert seen["title"] == "Explain · etcd" and seen["top"] == 0
