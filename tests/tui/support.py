"""Shared helpers of the TUI tests: configs, a frozen clock, and polling with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from textual.pilot import Pilot

from khwtui.core.events import CheckResult, Event, LogLines
from khwtui.model import config as config_module
from khwtui.model.config import Config
from khwtui.model.topology import Addresses, Topology
from khwtui.tui.app import KhwApp

from .fake_engine import FakeEngine

T0 = 1790000000.0  # the hand-written gcp streams start here (2026-09-21 14:13:20 UTC)
EXTERNAL = {"controller-0": "35.247.31.18", "controller-1": "35.247.31.19", "worker-0": "34.82.140.7", "worker-1": "34.82.140.8"}


def gcp_config() -> Config:
    return config_module.from_dict({"gcp": {"project": "khw-demo-1234", "region": "us-west1", "zone": "us-west1-c"}})


def gcp_topology(config: Config | None = None, *, learned: bool = True) -> Topology:
    """The 2+2 gcp cluster; `learned`: the external and API addresses are known already."""
    addresses = Addresses(external=dict(EXTERNAL), public="34.83.1.2") if learned else Addresses()
    return Topology(config or gcp_config(), addresses)


def local_topology() -> Topology:
    return Topology(config_module.load(config_module.default_config_path().parent / "local.toml"))


@dataclass
class FrozenClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


async def wait_until(pilot: Pilot, condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Let the app work until `condition` holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def drain(app: KhwApp) -> None:
    """Everything the engine emitted so far is applied: flush the bridge, then wait for a
    callback queued behind the messages it posted (the app handles its queue in order)."""
    app.bridge.flush()
    applied = asyncio.Event()
    app.call_later(applied.set)
    await applied.wait()


async def replay(pilot: Pilot, engine: FakeEngine, key: str = "r") -> None:
    """Press `key` (a run key) and wait until the engine's stream is on screen; a run that
    is not held open has finished by then."""
    await pilot.press(key)
    await engine.replayed.wait()
    if not engine.hold:
        await pilot.app.workers.wait_for_complete()
    await drain(pilot.app)
    await pilot.pause()


def row(app: KhwApp, stage: str) -> dict[str, str]:
    """A stage row as plain text by column key, a wrapped reason joined back into one line."""
    table = app.stage_list
    return {key: " ".join(str(table.get_cell(stage, key)).split()) for key in ("mark", "stage", "detail", "time")}


def shown_lines(events: list[Event]) -> int:
    """How many log pane lines a stream makes without a filter."""
    checks = [e for e in events if isinstance(e, CheckResult)]
    return sum(len(e.lines) for e in events if isinstance(e, LogLines)) + sum(1 + len(c.evidence.splitlines()) for c in checks)
