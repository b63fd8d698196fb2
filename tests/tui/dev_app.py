"""Try the TUI by hand on a replayed stream: `python -m tests.tui.dev_app [STREAM] [--pace S] [--initial STREAM]`.

Runs the real app (make_app) with the FakeEngine and fake services (probes replaying the
healthy stream's round, with etcd failing on controller-1 in the third round and recovering
after; certificates of a real aged Pki in a temp folder; a provider-like teardown). Press r to
replay STREAM (default: the gcp build in progress, held open so q asks before stopping).
--pace spaces the events out so the build can be watched.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from khwtui.tui.app import make_app

from .fake_engine import FakeEngine, load_stream
from .fake_services import health_round
from .scenes import failing_round, services
from .support import gcp_config, gcp_topology


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stream", nargs="?", default="gcp_build_in_progress")
    parser.add_argument("--pace", type=float, default=0.05)
    parser.add_argument("--initial", default="")
    args = parser.parse_args()
    engine = FakeEngine(load_stream(args.stream), hold=True, pace=args.pace)
    config = gcp_config()
    topo = gcp_topology(config)
    initial = load_stream(args.initial) if args.initial else []
    started, replay_from = time.time(), engine.events[0].at if engine.events else 0.0

    def clock() -> float:
        """The stream's own time, running on from its first event (its stamps are fixed)."""
        return replay_from + time.time() - started

    with tempfile.TemporaryDirectory(prefix="khwtui-dev-") as workdir:
        rounds = [health_round(), health_round(), failing_round(), health_round()]
        make_app(config, topo, engine, initial=initial, clock=clock, state_dir=Path(workdir), services=services(Path(workdir), topo, rounds)).run()


if __name__ == "__main__":
    main()
