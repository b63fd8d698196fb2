"""Release files for the stage tests' scripted nodes (stagerun.ScriptedRemote keeps each node's
files, no SSH): fetched and verified on this machine, unpacked by name as the node's install script
does, and compared and placed the way the script compares and installs them (root's, mode 0755).
The node script itself is exercised on real nodes (tests/test_release_delivery_local.py)."""

from __future__ import annotations

import pytest
from mirror.tarballs import tar_members

from khwtui.artifacts.render import NodeFile
from khwtui.toolkit.release_install import MODE, StageReleases


async def _wanted(releases: StageReleases, run) -> list[NodeFile]:
    wanted: dict[str, bytes] = {}
    for release in await releases.releases(run):
        data = releases._binaries(run).fetch_resolved(release.source).path.read_bytes()
        wanted |= tar_members(data, dict(release.spec.targets)) if release.spec.archive else {release.paths[0]: data}
    return [NodeFile(path, data, MODE) for path, data in wanted.items()]


async def _missing(self: StageReleases, run, node: str) -> list[NodeFile]:
    files = run.remote.files.get(node, {})
    return [f for f in await _wanted(self, run) if files.get(f.path) != f]


async def _drifted(self: StageReleases, run, node: str) -> list[str]:
    return [f.path for f in await _missing(self, run, node)]


async def _install(self: StageReleases, run, node: str, restarts=None) -> list[str]:
    missing = await _missing(self, run, node)
    run.mark_due(node, [f.path for f in missing], restarts or {})
    await run.remote.write(run.host(node), missing)
    return [f.path for f in missing]


def simulate_release_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StageReleases, "drifted", _drifted)
    monkeypatch.setattr(StageReleases, "install", _install)
