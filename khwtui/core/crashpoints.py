"""Named crash points, for tests only: prove that a SIGKILL at the worst instant loses nothing.

With KHWTUI_CRASH_AT set to a comma-separated list of point names, the process SIGKILLs itself
the first time it reaches one of them; unset (always, outside tests) `reached` does nothing.
The points (README "Resume, status, teardown" lists them for users who want to try):

  <stage>.placed     a unit's changed files are on the node, its restart not yet done
                     (etcd, control-plane, frontend, workers, routes)
  apt.started        an apt-get install was started on a node (it goes on there without us)
  gcp.insert-sent    a cloud insert was sent, its operation not yet waited on
  state.save         state.toml's new text is written and synced, not yet renamed into place
  rollout.next-node  a rolling step (certificate renewal) finished one node, the next not begun
"""

from __future__ import annotations

import os
import signal

ENV = "KHWTUI_CRASH_AT"
POINTS = ("etcd.placed", "control-plane.placed", "frontend.placed", "workers.placed", "routes.placed",
          "apt.started", "gcp.insert-sent", "state.save", "rollout.next-node")


def reached(name: str) -> None:
    """SIGKILL this process here if KHWTUI_CRASH_AT names `name`: no cleanup, no finally, no flush."""
    if name in os.environ.get(ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
