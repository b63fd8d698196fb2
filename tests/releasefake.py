"""Release files for the stage tests' simulated nodes (a `files` dict per node, no SSH): fetched and
verified on this machine, unpacked by name as the node's install script does, and compared and
placed the way the script compares and installs them. The node script itself is exercised on real
nodes (tests/test_release_delivery_local.py)."""

from __future__ import annotations

import pytest
from mirror.tarballs import tar_members

from khwtui.model.state import NodeRecord
from khwtui.toolkit.release_install import MODE, StageReleases


async def _wanted(releases: StageReleases, run) -> dict[str, bytes]:
    wanted: dict[str, bytes] = {}
    for release in await releases.releases(run):
        data = releases._binaries(run).fetch_resolved(release.source).path.read_bytes()
        wanted |= tar_members(data, dict(release.spec.targets)) if release.spec.archive else {release.paths[0]: data}
    return wanted


async def _drifted(self: StageReleases, run, node: str) -> list[str]:
    files = run.nodes[node].files
    return [path for path, data in (await _wanted(self, run)).items() if files.get(path) != (data, MODE)]


async def _install(self: StageReleases, run, node: str, restarts=None) -> list[str]:
    changed = await _drifted(self, run, node)
    run.state.nodes.setdefault(node, NodeRecord(node, ""))
    run.mark_due(node, changed, restarts or {})
    wanted = await _wanted(self, run)
    run.nodes[node].files.update({path: (wanted[path], MODE) for path in changed})
    return changed


def simulate_release_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StageReleases, "drifted", _drifted)
    monkeypatch.setattr(StageReleases, "install", _install)
