"""Try the TUI by hand on a replayed stream: `python -m tests.tui.dev_app [STREAM] [--pace S] [--initial STREAM]`.

Runs the real app (make_app) with the FakeEngine; press r to replay STREAM (default: the
gcp build in progress, held open so q asks before stopping). --pace spaces the events out so
the build can be watched.
"""

from __future__ import annotations

import argparse
import time

from khwtui.tui.app import make_app

from .fake_engine import FakeEngine, load_stream
from .support import gcp_config, gcp_topology


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stream", nargs="?", default="gcp_build_in_progress")
    parser.add_argument("--pace", type=float, default=0.05)
    parser.add_argument("--initial", default="")
    args = parser.parse_args()
    engine = FakeEngine(load_stream(args.stream), hold=True, pace=args.pace)
    config = gcp_config()
    initial = load_stream(args.initial) if args.initial else []
    started, replay_from = time.time(), engine.events[0].at if engine.events else 0.0

    def clock() -> float:
        """The stream's own time, running on from its first event (its stamps are fixed)."""
        return replay_from + time.time() - started

    make_app(config, gcp_topology(config), engine, initial=initial, clock=clock).run()


if __name__ == "__main__":
    main()
