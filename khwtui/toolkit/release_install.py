"""Release files onto nodes, verified on the node before anything is installed.

Every release file goes through the node's cache, /var/cache/khwtui/<sha256>: with node delivery
the node downloads it there itself (curl, resuming a partial download); with push delivery this
machine streams it from its own verified cache over SFTP, once per node. Either way the node
checks the SHA-256 the operator resolved before it unpacks or installs anything
(templates/release-install.sh.j2), and records what it installed in <sha256>.<targets>.installed
(two releases can be the same file under different names), which later checks read back (templates/release-status.sh.j2). Release files never pass through
RunContext.place: the stages' own files do.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import platformdirs

from khwtui.artifacts.render import render
from khwtui.core.errors import StageFailed
from khwtui.core.events import TransferProgress
from khwtui.model.config import Config
from khwtui.model.state import FileRecord
from khwtui.toolkit.apt import LOCK_WAIT, install_missing
from khwtui.toolkit.delivery import NODE, Choice, fixed_choice, origins, probe
from khwtui.toolkit.run_context import RunContext
from khwtui.transport.binaries import Artifact, Binaries, Resolved
from khwtui.transport.transfers import Milestones, describe

NODE_CACHE = "/var/cache/khwtui"
MODE = 0o755
INSTALL_TIMEOUT = 3600  # a large file on a slow link; progress lines show it is moving
PUSH_EVENTS_EVERY = 0.5  # seconds between upload progress events
CURL = "/usr/bin/curl"
FIX_NODE = ('fix: give the node outbound access to that host, set binaries.mirror to a mirror the nodes reach, '
            'or set binaries.delivery = "push"')


@dataclass(frozen=True)
class ReleaseSpec:
    """One release file a stage needs and where its programs go: (name in the release, node path).
    A plain file (archive=False) has one target, the file itself."""

    component: str
    version: str
    targets: tuple[tuple[str, str], ...]
    name: str = ""  # the file name, for components whose URL template has {name}
    archive: bool = True


@dataclass(frozen=True)
class Release:
    spec: ReleaseSpec
    source: Resolved

    @property
    def sha256(self) -> str:
        return self.source.sha256

    @property
    def paths(self) -> list[str]:
        return [path for _, path in self.spec.targets]

    @property
    def key(self) -> str:
        """The file's sum and where its programs go: names the node's manifest of this release."""
        return f"{self.sha256}.{hashlib.sha256(chr(10).join(self.paths).encode()).hexdigest()[:12]}"


@dataclass
class NodeReleases:
    """What one node reported: per release key, "ok" (installed as recorded), "cached" or "absent",
    and the installed programs' sums by path."""

    status: dict[str, str] = field(default_factory=dict)
    installed: dict[str, str] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)


def parse_report(stdout: str, into: NodeReleases) -> NodeReleases:
    """Reads the status and install scripts' "khwtui-..." lines."""
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("khwtui-ok", "khwtui-cached", "khwtui-absent"):
            into.status[rest.strip()] = word.removeprefix("khwtui-")
        elif word == "khwtui-installed":
            digest, _, path = rest.partition("  ")
            into.installed[path] = digest
        elif word == "khwtui-changed":
            into.changed.append(rest)
    return into


def status_command(releases: list[Release], cache: str = NODE_CACHE) -> str:
    return render("release-status.sh.j2", q=shlex.quote, cache=cache,
                  releases=[{"sha256": r.sha256, "key": r.key, "paths": r.paths} for r in releases])


def install_command(release: Release, staged: str = "", cache: str = NODE_CACHE) -> str:
    return render("release-install.sh.j2", q=shlex.quote, cache=cache, sha256=release.sha256, key=release.key, url=release.source.url,
                  staged=staged, archive=release.spec.archive, targets=list(release.spec.targets))


class StageReleases:
    """One stage's release files: resolved once (only checksum files are fetched here), then put on
    each node in the run's delivery mode. With push, each file is downloaded once per run."""

    def __init__(self, specs: Callable[[Config], list[ReleaseSpec]]) -> None:
        self._specs = specs
        self._resolved: list[Release] | None = None
        self._artifacts: dict[str, asyncio.Future[Artifact]] = {}
        self._lock = asyncio.Lock()

    def _binaries(self, run: RunContext) -> Binaries:
        return Binaries(run.config, platformdirs.user_cache_path("khwtui", appauthor=False) / "downloads")

    async def releases(self, run: RunContext) -> list[Release]:
        async with self._lock:
            if self._resolved is None:
                binaries = self._binaries(run)

                def resolve() -> list[Release]:
                    return [Release(s, binaries.resolve(s.component, s.version, name=s.name)) for s in self._specs(run.config)]

                self._resolved = await asyncio.to_thread(resolve)
        return self._resolved

    async def drifted(self, run: RunContext, node: str) -> list[str]:
        """The paths of every release whose programs are not on the node as installed (one command)."""
        releases = await self.releases(run)
        report = await self._status(run, node, releases)
        self._record(run, node, report, releases)
        return [path for r in releases if report.status.get(r.key) != "ok" for path in r.paths]

    async def install(self, run: RunContext, node: str, restarts: Mapping[str, Collection[str]] | None = None) -> list[str]:
        """Puts every release on the node that is not there yet; returns the program paths that changed.

        `restarts` (unit -> the paths it reads): as with RunContext.place, each unit whose programs
        are about to change is recorded as due for a restart before anything is installed."""
        releases = await self.releases(run)
        report = await self._status(run, node, releases)
        missing = [r for r in releases if report.status.get(r.key) != "ok"]
        if missing:
            run.mark_due(node, [path for r in missing for path in r.paths], restarts or {})
            choice = await delivery_choice(run, [r.source.url for r in releases])
            if choice.mode == NODE and any(report.status.get(r.key) == "absent" for r in missing):
                await self._ensure_curl(run, node)
            same_file: dict[str, list[Release]] = {}
            for release in missing:
                same_file.setdefault(release.sha256, []).append(release)
            results = await asyncio.gather(*(self._deliver(run, node, group, choice.mode, report) for group in same_file.values()),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:  # every file has finished or failed by now: nothing runs on behind the error
                raise errors[0]
        self._record(run, node, report, releases)
        return report.changed

    async def _deliver(self, run: RunContext, node: str, group: list[Release], mode: str, report: NodeReleases) -> None:
        """One file onto one node, for every release that is this file (in turn: the first brings
        it into the node's cache). With push it is uploaded first, unless the node has it."""
        for i, release in enumerate(group):
            staged = ""
            if i == 0 and mode != NODE and report.status.get(release.key) == "absent":
                staged = await self._push(run, node, release)
            await self._run_install(run, node, release, staged, mode, report)

    # --- steps --------------------------------------------------------------------------------

    async def _status(self, run: RunContext, node: str, releases: list[Release]) -> NodeReleases:
        result = await run.sh(node, status_command(releases), timeout=300)
        return parse_report(result.stdout, NodeReleases())

    async def _ensure_curl(self, run: RunContext, node: str) -> None:
        result = await run.sh(node, install_missing(("curl",)), timeout=LOCK_WAIT + 600, check=False)
        if result.exit_status != 0:
            raise StageFailed(f"{node} has no curl to download release files and could not install it from its apt sources; "
                              'fix: give the node an apt source with curl, or set binaries.delivery = "push"', node)

    async def _artifact(self, run: RunContext, release: Release) -> Artifact:
        """The verified file in this machine's cache, downloaded once per run whoever asks first."""
        if release.sha256 not in self._artifacts:
            binaries = self._binaries(run)
            self._artifacts[release.sha256] = asyncio.ensure_future(asyncio.to_thread(binaries.fetch_resolved, release.source))
            artifact = await self._artifacts[release.sha256]
            run.log("", f"{artifact.name}: SHA-256 {artifact.sha256} verified")
        return await self._artifacts[release.sha256]

    async def _push(self, run: RunContext, node: str, release: Release) -> str:
        """Uploads the verified file to the node's staging folder, with progress events."""
        artifact = await self._artifact(run, release)
        meter = Meter(run, node, release.source.name, "push")
        staged = await run.remote.upload(run.host(node), artifact.path, progress=meter.update)
        meter.update(artifact.size, artifact.size, final=True)
        return staged

    async def _run_install(self, run: RunContext, node: str, release: Release, staged: str, mode: str, report: NodeReleases) -> None:
        meter = Meter(run, node, release.source.name, mode)
        failure: list[str] = []

        def line(host: str, stream: str, text: str) -> None:
            word, _, rest = text.partition(" ")
            if word == "khwtui-progress":
                done, _, total = rest.partition(" ")
                meter.update(int(done or 0), int(total or 0))
                return
            if word in ("khwtui-refused", "khwtui-failed"):
                failure.append(text)
            run.log(host, text, stream)

        command = install_command(release, staged)
        result = await run.remote.run(run.host(node), command, sudo=True, timeout=INSTALL_TIMEOUT, check=False, lines_to=line)
        if result.exit_status != 0:
            raise install_error(node, release, result.exit_status, failure)
        meter.finish()
        run.log(node, f"{release.source.name}: SHA-256 {release.sha256} verified on {node}, installed")
        parse_report(result.stdout, report)
        report.status[release.key] = "ok"

    def _record(self, run: RunContext, node: str, report: NodeReleases, releases: list[Release]) -> None:
        """Records what the node has in place: the programs with the sums it computed, and its cached
        file and manifest, so that `down` (machines) removes them too."""
        files = run.state.nodes[node].files
        for release in releases:
            if report.status.get(release.key) != "ok":
                continue
            manifest = "".join(f"{report.installed[path]}  {path}\n" for path in release.paths)
            cached = f"{NODE_CACHE}/{release.sha256}"
            records = [FileRecord(path, report.installed[path], MODE, "root", "root", run.stage) for path in release.paths]
            records += [FileRecord(cached, release.sha256, 0o644, "root", "root", run.stage),
                        FileRecord(f"{NODE_CACHE}/{release.key}.installed", hashlib.sha256(manifest.encode()).hexdigest(), 0o644, "root", "root", run.stage)]
            files.update({r.path: r for r in records})
        if any(status == "ok" for status in report.status.values()):
            run.save()


def install_error(node: str, release: Release, status: int, failure: list[str]) -> StageFailed:
    """One line: the node, the file and its URL, the cause and the fix."""
    url, name = release.source.url, release.source.name
    word, _, rest = (failure[-1] if failure else "").partition(" ")
    if word == "khwtui-refused":
        return StageFailed(f"{node} refused {name} from {url}: its SHA-256 is {rest}, expected {release.sha256}; nothing of it "
                           "was installed; fix: check binaries.mirror and the pinned sum in binaries.sha256", node)
    if word == "khwtui-failed":
        code, _, cause = rest.partition(" ")
        if code == "0":
            return StageFailed(f"{node}: {name} from {url}: {cause}; nothing of it was installed; fix: check binaries.urls", node)
        return StageFailed(f"{node} could not download {url} (curl exit {code}: {cause.strip() or 'no message'}); "
                           f"nothing of it was installed; {FIX_NODE}", node)
    return StageFailed(f"{node}: installing {name} from {url} exited with status {status}", node)


async def delivery_choice(run: RunContext, urls: list[str]) -> Choice:
    """The run's delivery mode for these URLs' origins: decided once per run and logged."""
    key = tuple(sorted(origins(urls)))
    if key not in run.deliveries:
        run.deliveries[key] = asyncio.ensure_future(_decide(run, urls))
        choice = await run.deliveries[key]
        run.log("", f"binary delivery: {choice.mode} — {choice.reason}")
    return await run.deliveries[key]


async def _decide(run: RunContext, urls: list[str]) -> Choice:
    fixed = fixed_choice(run.config)
    if fixed is not None:
        return fixed
    nodes = [n.name for n in run.topo.nodes if n.role in ("controller", "worker")]
    return await probe(run, nodes, urls)


class Meter:
    """Turns byte counts into TransferProgress events: `done` never goes back, upload events are
    spaced out, and the start, each quarter and the end are also written to the node's log."""

    def __init__(self, run: RunContext, node: str, file: str, mode: str) -> None:
        self.run, self.node, self.file, self.mode = run, node, file, mode
        self.started = time.monotonic()
        self.done = -1
        self.total = 0
        self.sent_at = 0.0
        self.milestones = Milestones()

    def update(self, done: int, total: int, final: bool = False) -> None:
        now = time.monotonic()
        if done <= self.done and not final:
            return
        if not final and self.mode != NODE and now - self.sent_at < PUSH_EVENTS_EVERY and done < total:
            return
        self.done, self.total, self.sent_at = max(done, self.done), total or self.total, now
        elapsed = max(now - self.started, 1e-3)
        event = TransferProgress(self.node, self.run.stage, self.file, self.mode, self.done, self.total,
                                 self.done / elapsed, self.run.clock())
        self.run.emit(event)
        if self.milestones.reached(event):
            self.run.log(self.node, describe(event))

    def finish(self) -> None:
        """The end, when the node had the file already (no progress lines) or stopped short of the total."""
        if self.done < 0:
            return
        if self.total and self.done < self.total:
            self.update(self.total, self.total, final=True)
