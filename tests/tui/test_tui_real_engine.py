"""The app driving the real engine on real nspawn nodes: marks follow the build to a healthy etcd,
and nothing the build does holds the event loop (the screen would freeze)."""

from __future__ import annotations

import pytest
from localcluster import LocalCluster, local_config

from khwtui.core.events import PASSED, PENDING, RUNNING
from khwtui.engine.runner import Engine
from khwtui.model.cluster import open_cluster
from khwtui.tui.app import make_app

from .loop_watch import blocking_callbacks
from .support import row, wait_until

pytestmark = pytest.mark.integration


async def test_marks_change_as_the_real_engine_builds_to_etcd_without_holding_the_loop(tmp_path, unique_prefix, release_mirror) -> None:
    # the default key type: RSA keys take the loop for seconds if the pki stage makes them on it
    c = LocalCluster(tmp_path / "c", local_config(f"t{unique_prefix}", 3, 1, release_mirror, pki={"key_type": "rsa-2048"}))
    try:
        cluster = open_cluster(str(c.config_path), str(c.state_dir))
        engine = Engine(cluster)
        app = make_app(cluster.config, cluster.topology, engine, initial=engine.saved_events(), state_dir=c.state_dir)
        stages, nodes = app.progress.stages, app.progress.nodes
        seen_running: set[str] = set()
        node_states: dict[str, set[str]] = {name: set() for name in nodes}
        async with app.run_test(size=(120, 40)) as pilot:
            assert all(view.status == PENDING for view in stages.values())
            with blocking_callbacks() as held:
                app.start_run(until="etcd")

                def progressed() -> bool:
                    seen_running.update(name for name, view in stages.items() if view.status == RUNNING)
                    for name, view in nodes.items():
                        node_states[name].add(view.status)
                    return stages["etcd"].status not in (PENDING, RUNNING) and not app.running

                await wait_until(pilot, progressed, "the build to reach etcd", timeout=300)
            await pilot.pause()
            assert app.exit_code == 0
            assert held == [], "callbacks that held the loop:\n" + "\n".join(map(str, held))
            for name in ("compute", "pki", "kubeconfigs", "encryption", "etcd"):
                assert stages[name].status == PASSED, name
                assert row(app, name)["mark"] == "✔"
            assert {"compute", "etcd"} <= seen_running  # the rows really went through ⟳
            assert stages["control-plane"].status == PENDING and row(app, "control-plane")["mark"] == "·"
            for controller in ("controller-0", "controller-1", "controller-2"):
                assert RUNNING in node_states[controller] and nodes[controller].status == PASSED
    finally:
        c.down()
