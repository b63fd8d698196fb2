"""Open the app for `khwtui` / `khwtui up` without --auto: the CLI's only way into the TUI."""

from __future__ import annotations

from khwtui.context import Cluster
from khwtui.engine import Engine
from khwtui.errors import EXIT_OK
from khwtui.tui.app import make_app


def run_interactive(cluster: Cluster, engine: Engine, *, only: list[str] | None, start: str | None, until: str | None) -> int:
    """Show the saved state; a slice given on the command line starts that run at once."""
    selection = {"only": only, "start": start, "until": until} if (only or start or until) else None
    app = make_app(cluster.config, cluster.topology, engine, initial=engine.saved_events(), state_dir=cluster.state_dir.path, autostart=selection)
    code = app.run()
    return EXIT_OK if code is None else code
