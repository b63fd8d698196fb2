"""One day-2 operation on a built cluster (backup, restore, renewal, stop/start): a RunContext
under the cluster's lock, its SSH connections closed at the end, progress printed as node lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from khwtui.core.errors import StateError
from khwtui.core.events import Sink
from khwtui.model.cluster import Cluster
from khwtui.toolkit.run_context import RunContext

T = TypeVar("T")


def require_nodes(cluster: Cluster, first: str) -> None:
    """Refuse (exit 2) before anything runs when the controllers were never reached."""
    missing = [n.name for n in cluster.topology.controllers if not cluster.state.nodes.get(n.name, None) or not cluster.state.nodes[n.name].host_key]
    if missing:
        raise StateError(f"{', '.join(missing)} not built yet (no pinned host key in state); fix: run `khwtui up --until {first}` first")


def run_operation(cluster: Cluster, stage: str, work: Callable[[RunContext], Awaitable[T]], sink: Sink | None = None) -> T:
    """Run `work` with a RunContext named `stage`, holding the state folder's lock throughout."""
    from khwtui.console.headless import ConsoleSink

    async def main() -> T:
        run = RunContext.of(cluster, sink or ConsoleSink(), stage)
        try:
            return await work(run)
        finally:
            await run.close()

    with cluster.state_dir.lock():
        return asyncio.run(main())
