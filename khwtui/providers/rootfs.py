"""The shared Debian 12 node root: built once with debootstrap from the host's own Debian mirror,
made generic, and cached under the user cache dir.

The cache key covers everything the root is made of (suite, packages, mirror, the baked files),
so a change builds a new root beside the old one. A build runs in a temporary folder under a
lock and is renamed into place, so a crash or a second khwtui never sees half a root. Only the
generic parts are baked here; everything per node goes into the node's overlay upper dir.
debootstrap itself keeps a policy-rc.d (exit 101) in the target while it installs and removes it
at the end, so no daemon starts during the build; nothing else runs in the root before it boots.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import platformdirs

from khwtui.artifacts.render import render
from khwtui.core.errors import OperationError
from khwtui.providers.base import LogFn
from khwtui.providers.nspawn import unmount_under

SUITE = "bookworm"
# Enough for systemd, sshd and sudo to run as on a cloud image; no Kubernetes component, and no
# python3 (the tests install what they need from their own apt repo).
PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "iproute2", "iputils-ping", "ca-certificates", "procps")
ROOTFS_BYTES = 700 * 2**20  # a built root (~280 MB) plus the .deb cache, with room to spare
CGROUP_RW_SCRIPT = "/usr/local/sbin/khwtui-cgroup-rw"
CGROUP_RW_UNIT = "/etc/systemd/system/khwtui-cgroup-rw.service"
LOG_TAIL = 15


@dataclass(frozen=True)
class BakedFile:
    path: str  # absolute inside the node root
    template: str
    mode: int


BAKED_FILES = (
    BakedFile("/usr/sbin/modprobe", "local-modprobe.sh.j2", 0o755),
    BakedFile(CGROUP_RW_SCRIPT, "local-cgroup-rw.sh.j2", 0o755),
    BakedFile(CGROUP_RW_UNIT, "local-cgroup-rw.service.j2", 0o644),
)
SYMLINKS = {
    "/etc/systemd/system/sysinit.target.wants/khwtui-cgroup-rw.service": CGROUP_RW_UNIT,  # enabled
    "/var/lib/dbus/machine-id": "/etc/machine-id",  # as a copy, systemd would give every node its ID
}
# debootstrap made host keys every node would share; each node gets its own. The machine-id and
# hostname are per node too. apt's timers would race the tool's own apt-get on short-lived nodes.
REMOVED = (
    "/etc/ssh/ssh_host_*",
    "/var/lib/dbus/machine-id",
    "/etc/hostname",
    "/var/cache/apt/archives/*.deb",
    "/etc/systemd/system/timers.target.wants/apt-daily.timer",
    "/etc/systemd/system/timers.target.wants/apt-daily-upgrade.timer",
)
EMPTIED = ("/etc/machine-id",)


class RootfsError(OperationError):
    """A node root could not be built or read."""


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    origin: str  # the file it came from


@dataclass(frozen=True)
class Mirror:
    uri: str | None
    origin: str  # where it came from, for `plan` and the preflight message


def resolve_mirror(configured: str, etc: Path = Path("/etc")) -> Mirror:
    """local.debian_mirror if set, else the Debian mirror the host's apt already uses."""
    if configured:
        return Mirror(configured.rstrip("/"), "local.debian_mirror")
    sources = [s for s in read_apt_sources(etc) if urlparse(s.uri).scheme in ("http", "https", "file")]
    for source in sources:
        if SUITE in source.suites:
            return Mirror(source.uri.rstrip("/"), source.origin)
    if _os_id(etc) == "debian":  # another Debian release: its mirror serves bookworm too
        for source in sources:
            if any("-" not in suite and "/" not in suite for suite in source.suites):
                return Mirror(source.uri.rstrip("/"), source.origin)
    return Mirror(None, f"{etc / 'apt'} sources")


def read_apt_sources(etc: Path = Path("/etc")) -> list[AptSource]:
    """Binary (`deb`) entries of sources.list, sources.list.d/*.list and deb822 *.sources, in apt's order."""
    apt = etc / "apt"
    found: list[AptSource] = []
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        if path.name == "sources.list" or path.suffix == ".list":
            found += _one_line_entries(path.read_text(), str(path))
        elif path.suffix == ".sources":
            found += _deb822_entries(path.read_text(), str(path))
    return found


def _one_line_entries(text: str, origin: str) -> Iterator[AptSource]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        rest = words[1:]
        if rest and rest[0].startswith("["):  # [arch=amd64 signed-by=...] options
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2:
            yield AptSource(rest[0], (rest[1],), origin)


def _deb822_entries(text: str, origin: str) -> Iterator[AptSource]:
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip().lower()
                fields[key] = value.strip()
        uris, suites = fields.get("uris", "").split(), tuple(fields.get("suites", "").split())
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no" and uris and suites:
            yield AptSource(uris[0], suites, origin)


def _os_id(etc: Path) -> str:
    try:
        text = (etc / "os-release").read_text()
    except OSError:
        return ""
    match = re.search(r"^ID=\"?([^\"\n]*)", text, re.M)
    return match.group(1) if match else ""


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("khwtui")) / "rootfs"


def _baked_text(baked: BakedFile) -> str:
    return render(baked.template, script=CGROUP_RW_SCRIPT)


@dataclass(frozen=True)
class RootfsCache:
    """Where the root for `mirror` lives in the cache folder `base`."""

    base: Path
    mirror: str

    @property
    def key(self) -> str:
        recipe = {
            "suite": SUITE,
            "packages": PACKAGES,
            "mirror": self.mirror,
            "baked": {b.path: [_baked_text(b), b.mode] for b in BAKED_FILES},
            "symlinks": SYMLINKS,
            "removed": REMOVED,
            "emptied": EMPTIED,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def path(self) -> Path:
        return self.base / f"{SUITE}-{self.key}"

    def ready(self) -> bool:
        return self.path.is_dir()


async def ensure_rootfs(cache: RootfsCache, log: LogFn) -> Path:
    """The cached root, built first if missing; safe against a second khwtui doing the same."""
    if cache.ready():
        return cache.path
    cache.base.mkdir(parents=True, exist_ok=True)
    with open(cache.base / ".lock", "w") as lock:  # noqa: ASYNC230 - creating an empty lock file; the wait for it is in a thread
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another khwtui is building the node root; waiting for it")
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        if cache.ready():
            return cache.path
        _remove_stale_builds(cache.base)
        build = cache.base / f".build-{cache.key}-{os.getpid()}"
        try:
            await _debootstrap(build, cache, log)
            bake(build)
            build.rename(cache.path)
        finally:
            if build.exists():
                _remove_build(build)
    log(f"node root ready: {cache.path}")
    return cache.path


def _remove_stale_builds(base: Path) -> None:
    """Builds left by a crashed run (we hold the lock, so nobody is using them)."""
    for stale in base.glob(".build-*"):
        _remove_build(stale)


def _remove_build(path: Path) -> None:
    unmount_under(path)  # debootstrap mounts /proc and /sys in the target while it works
    shutil.rmtree(path)


async def _debootstrap(target: Path, cache: RootfsCache, log: LogFn) -> None:
    debs = cache.base / "debs"  # keeps the .debs for the next build with another key
    debs.mkdir(exist_ok=True)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        f"--cache-dir={debs}",
        SUITE,
        str(target),
        cache.mirror,
    ]
    log(f"building the node root: debootstrap {SUITE} from {cache.mirror}")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    tail: list[str] = []
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        log(line)
        tail = (tail + [line])[-LOG_TAIL:]
    if await proc.wait() != 0:
        raise RootfsError(f"debootstrap failed ({proc.returncode}); last output: {' | '.join(tail)}")


def bake(root: Path) -> None:
    """Make a fresh debootstrap root generic: shims in, per-machine identity out."""
    for baked in BAKED_FILES:
        path = _inside(root, baked.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_baked_text(baked))
        path.chmod(baked.mode)
    for pattern in REMOVED:
        for path in root.glob(pattern.lstrip("/")):
            path.unlink()
    for link, target in SYMLINKS.items():
        path = _inside(root, link)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    for emptied in EMPTIED:
        _inside(root, emptied).write_text("")


def _inside(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")
