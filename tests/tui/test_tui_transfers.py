"""Release files on their way to a node show on the node's row: file, percent, rate and ETA, until
they have arrived (issue 19)."""

from __future__ import annotations

from khwtui.core.events import NodeChanged, StageChanged, TransferProgress
from khwtui.tui.app import make_app

from .fake_engine import FakeEngine
from .support import T0, FrozenClock, gcp_config, gcp_topology, replay

SIZE = (120, 40)
FILE = "etcd-v3.6.12-linux-amd64.tar.gz"
MB = 1_000_000


def etcd_download(*progress: tuple[int, float]) -> list:
    """controller-0 downloading etcd's release file: (bytes so far, bytes per second) per event."""
    return [
        StageChanged("etcd", "running", "", T0),
        NodeChanged("controller-0", "running", "etcd", "", "", T0),
        *(TransferProgress("controller-0", "etcd", FILE, "node", done, 24 * MB, rate, T0 + i) for i, (done, rate) in enumerate(progress, 1)),
    ]


async def test_a_download_in_progress_shows_percent_rate_and_eta_on_the_nodes_row() -> None:
    config = gcp_config()
    engine = FakeEngine(etcd_download((0, 0.0), (6 * MB, 3 * MB)), hold=True)
    app = make_app(config, gcp_topology(config), engine, clock=FrozenClock(T0))
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        assert app.node_tree.label_of("controller-0") == f"⟳ controller-0 10.240.0.10 · {FILE} 25% 3.0 MB/s ETA 6 s"
        assert app.node_tree.label_of("controller-1") == "○ controller-1 10.240.0.11 35.247.31.19"
        engine.release()


async def test_the_row_goes_back_to_the_stage_once_the_file_has_arrived() -> None:
    config = gcp_config()
    engine = FakeEngine(etcd_download((12 * MB, 3 * MB), (24 * MB, 3 * MB)), hold=True)
    app = make_app(config, gcp_topology(config), engine, clock=FrozenClock(T0))
    async with app.run_test(size=SIZE) as pilot:
        await replay(pilot, engine)
        assert app.node_tree.label_of("controller-0") == "⟳ controller-0 10.240.0.10 · etcd"
        engine.release()
