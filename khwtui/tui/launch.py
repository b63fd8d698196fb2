"""Open the app for `khwtui` / `khwtui up` without --auto: the CLI's only way into the TUI.

Here the app's services are wired to the real objects: health rounds of khwtui.engine.health, the
certificates of `khwtui certs`, the provider's teardown (as `khwtui down` does it), a node's
pinned SSH endpoint, certificate renewal (`khwtui certs --renew`), and for gcp the provider's
hourly estimate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial

from khwtui.artifacts.pki import CertRow, Pki
from khwtui.core.errors import EXIT_OK
from khwtui.core.events import Event, HealthChanged
from khwtui.engine.runner import Engine
from khwtui.model.cluster import Cluster
from khwtui.providers.base import PlannedResource, Provider
from khwtui.transport.node_ssh import shell_target
from khwtui.tui.app import make_app
from khwtui.tui.contracts import Services


def run_interactive(cluster: Cluster, engine: Engine, *, only: list[str] | None, start: str | None, until: str | None) -> int:
    """Show the saved state; a slice given on the command line starts that run at once."""
    selection = {"only": only, "start": start, "until": until} if (only or start or until) else None
    app = make_app(
        cluster.config,
        cluster.topology,
        engine,
        initial=engine.saved_events(),
        state_dir=cluster.state_dir.path,
        autostart=selection,
        services=services(cluster),
    )
    code = app.run()
    return EXIT_OK if code is None else code


def services(cluster: Cluster) -> Services:
    return Services(
        health=partial(probe_round, cluster),
        certs=partial(cert_rows, cluster),
        teardown=ClusterTeardown(cluster),
        shell=partial(shell_target, cluster),
        cost_per_hour=hourly_cost(cluster),
        api_address=lambda: cluster.topology.api_address,
        explain=partial(explain_stage, cluster),
        renew=partial(renew_certificates, cluster),
    )


def explain_stage(cluster: Cluster, stage: str) -> str:
    """`khwtui explain STAGE` as text, from the state as it is (nothing is made or written)."""
    from khwtui.learn.commands import stage_explanation

    return stage_explanation(cluster, stage)


async def renew_certificates(cluster: Cluster, names: list[str]) -> str:
    """`khwtui certs --renew`, off the UI's event loop."""
    from khwtui.day2.cert_rollout import renew_summary

    return await asyncio.to_thread(renew_summary, cluster, names)


async def probe_round(cluster: Cluster) -> list[HealthChanged]:
    """One round of khwtui.engine.health over its own SSH connections, closed afterwards. Only the
    results reach the screen: the probes' commands stay out of the log pane and, every few
    seconds, out of the node logs too."""
    from khwtui.engine.health import probe_round as round_of
    from khwtui.providers.factory import make_provider
    from khwtui.toolkit.run_context import RunContext
    from khwtui.transport.remote_factory import make_remote

    run = RunContext(cluster, _drop, make_provider(cluster), lambda _log: make_remote(cluster, _drop_line))
    try:
        return await round_of(run)
    finally:
        await run.close()


def _drop(_event: Event) -> None:
    """The round's events come back as its result; nothing else of it is shown."""


def _drop_line(_node: str, _line: str, _stream: str) -> None:
    """A probe's command output: its outcome is in the round's result."""


def cert_rows(cluster: Cluster) -> Sequence[CertRow]:
    """The rows `khwtui certs` prints."""
    return Pki(cluster.state_dir.pki_dir, cluster.config).rows(cluster.topology)


def hourly_cost(cluster: Cluster) -> Callable[[], float | None] | None:
    """For gcp: the provider's estimate (offline), while the cluster has nodes; others cost nothing."""
    if cluster.config.provider.kind != "gcp":
        return None
    from khwtui.providers.factory import make_provider

    hourly = make_provider(cluster).plan().hourly_usd
    return lambda: hourly if cluster.state.nodes else None


class ClusterTeardown:
    """`khwtui down` for the app: the provider's plan, then the deletion of exactly that plan under
    the cluster's lock, and a state that forgets the nodes (keeping the PKI and keys)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._provider: Provider | None = None

    def teardown_plan(self) -> list[PlannedResource]:
        from khwtui.providers.factory import make_provider

        self._provider = make_provider(self._cluster)  # the one that listed the plan deletes it
        return self._provider.teardown_plan()

    async def teardown(self, log: Callable[[str], None]) -> None:
        from khwtui.engine.teardown import forget_nodes

        if self._provider is None:
            raise RuntimeError("teardown() before teardown_plan(): nothing was confirmed")
        with self._cluster.state_dir.lock():
            await self._provider.teardown(log)
            forget_nodes(self._cluster)
