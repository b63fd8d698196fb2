"""Debian 12's etcd, containerd, runc and CNI plugins repackaged in the upstream release layouts.

The official release files cannot be downloaded here, so the tests serve these instead: same
folder layout, file names, archive members and checksum files as the upstream releases, built
byte-for-byte reproducibly so the sums the test configs pin stay valid between builds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import MirrorError, run, taking_turns
from .aptrepo import Deb, fetch_debs, host_arch

ENTRY_MTIME = 1686355200  # 2023-06-10, Debian 12's release day: one fixed time for every member
ARCHIVE_MODE = 0o755
GZIP_LEVEL = 1  # these files only cross the bridge; level 6 would take 3x longer for 10% less


@dataclass(frozen=True)
class Entry:
    """One archive member; `data` None is a directory."""

    name: str
    data: bytes | None


Members = Callable[[Path, str, str], list[tuple[str, Path]]]


@dataclass(frozen=True)
class Release:
    """Where one component's upstream release puts what, and which Debian packages fill it."""

    component: str  # the key in [versions] and [binaries.urls]
    version: str  # the upstream version Debian 12 ships
    packages: tuple[str, ...]
    template: str  # path under the mirror root; {version} {arch}
    checksum: str  # checksum file beside it; {version} {arch}
    members: Members  # (unpacked packages, version, arch) -> [(member name, file)]
    archive: bool = True  # False: the release file is the single binary itself

    def path(self, arch: str) -> str:
        return self.template.format(version=self.version, arch=arch)

    def checksum_path(self, arch: str) -> str:
        return str(Path(self.path(arch)).with_name(self.checksum.format(version=self.version, arch=arch)))


def _etcd(tree: Path, version: str, arch: str) -> list[tuple[str, Path]]:
    top = f"etcd-v{version}-linux-{arch}"
    return [(f"{top}/etcd", tree / "usr/bin/etcd"), (f"{top}/etcdctl", tree / "usr/bin/etcdctl")]


def _containerd(tree: Path, version: str, arch: str) -> list[tuple[str, Path]]:
    return [(f"bin/{binary.name}", binary) for binary in sorted((tree / "usr/bin").iterdir())]


def _runc(tree: Path, version: str, arch: str) -> list[tuple[str, Path]]:
    return [(f"runc.{arch}", tree / "usr/sbin/runc")]


def _cni_plugins(tree: Path, version: str, arch: str) -> list[tuple[str, Path]]:
    return [(f"./{plugin.name}", plugin) for plugin in sorted((tree / "usr/lib/cni").iterdir())]


RELEASES = (
    Release("etcd", "3.4.23", ("etcd-server", "etcd-client"),
            "etcd/v{version}/etcd-v{version}-linux-{arch}.tar.gz", "SHA256SUMS", _etcd),
    Release("containerd", "1.6.20", ("containerd",),
            "containerd/v{version}/containerd-{version}-linux-{arch}.tar.gz",
            "containerd-{version}-linux-{arch}.tar.gz.sha256sum", _containerd),
    Release("runc", "1.1.5", ("runc",), "runc/v{version}/runc.{arch}", "runc.sha256sum", _runc, archive=False),
    Release("cni_plugins", "1.1.1", ("containernetworking-plugins",),
            "cni-plugins/v{version}/cni-plugins-linux-{arch}-v{version}.tgz",
            "cni-plugins-linux-{arch}-v{version}.tgz.sha256", _cni_plugins),
)

# [binaries.urls] of the test configs, relative to the mirror's base URL (see binaries_urls).
MIRROR_URL_TEMPLATES = {release.component: release.template for release in RELEASES}


def binaries_urls(base_url: str) -> dict[str, str]:
    """[binaries.urls] for a mirror served at `base_url`."""
    return {component: f"{base_url.rstrip('/')}/{template}" for component, template in MIRROR_URL_TEMPLATES.items()}


@dataclass(frozen=True)
class Artifact:
    """One published release file, its checksum file and the Debian packages it came from."""

    component: str
    version: str
    debian: dict[str, str]  # package -> Debian version
    path: str  # under the mirror root
    checksum_path: str
    sha256: str  # of the file as built: the sum the test configs pin
    archive: bool

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class ReleaseTree:
    """The release files served from `root`."""

    root: Path
    arch: str
    artifacts: dict[str, Artifact]

    def versions(self) -> dict[str, str]:
        """[versions] entries: component -> upstream version."""
        return {a.component: a.version for a in self.artifacts.values()}

    def sha256(self) -> dict[str, str]:
        """[binaries.sha256]: file name -> pinned sum."""
        return {a.name: a.sha256 for a in self.artifacts.values()}

    def config(self, base_url: str) -> dict[str, dict]:
        """The [versions] and [binaries] tables a test config needs to install from this tree."""
        return {"versions": self.versions(), "binaries": {"urls": binaries_urls(base_url), "sha256": self.sha256()}}

    def tamper(self, component: str) -> None:
        """Change one byte inside a binary of `component`'s release and republish a matching
        checksum file: the attack only a pinned sum catches."""
        artifact = self.artifacts[component]
        path = self.root / artifact.path
        if artifact.archive:
            entries = read_tarball(path)
            first = next(i for i, entry in enumerate(entries) if entry.data is not None)
            entries[first] = Entry(entries[first].name, _flip_one_byte(entries[first].data or b""))
            write_tarball(path, entries)
        else:
            _replace(path, _flip_one_byte(path.read_bytes()))
        _replace(self.root / artifact.checksum_path, checksum_line(path).encode())


def _flip_one_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file and a rename (never in place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checksum_line(path: Path) -> str:
    """A `sha256sum` line, the format of every upstream checksum file used here."""
    return f"{sha256_file(path)}  {path.name}\n"


def _directories(names: list[str]) -> set[str]:
    """Every parent folder of the member names, as tar directory entries ("bin/", "./")."""
    return {name[: i + 1] for name in names for i, char in enumerate(name) if char == "/"}


def write_tarball(path: Path, entries: list[Entry]) -> None:
    """A .tar.gz whose bytes depend only on `entries`: sorted, fixed owner/mode/mtime, gzip mtime 0."""
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in sorted(entries, key=lambda e: e.name):
            info = tarfile.TarInfo(entry.name)
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = ENTRY_MTIME, ARCHIVE_MODE, 0, 0, "root", "root"
            if entry.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    _replace(path, raw.getvalue())


def read_tarball(path: Path) -> list[Entry]:
    """The members of a .tar.gz in archive order."""
    with tarfile.open(path, "r:gz") as tar:
        return [Entry(m.name, None if m.isdir() else tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def _upstream_version(debian_version: str) -> str:
    """"1:1.6.20~ds1-1+deb12u3" -> "1.6.20": the upstream release a Debian version packages."""
    match = re.match(r"(?:\d+:)?(\d+(?:\.\d+)*)", debian_version)
    return match.group(1) if match else debian_version


def _check_versions(release: Release, debs: list[Deb]) -> None:
    for deb in debs:
        if _upstream_version(deb.version) != release.version:
            raise MirrorError(f"{deb.package} {deb.version} from the host's apt sources is not "
                              f"{release.component} {release.version}; the test mirror pins Debian 12's versions")


def _build_into(out: Path, release: Release, debs: list[Deb], arch: str, scratch: Path) -> None:
    """Unpack the packages and write the release file and its checksum file into `out`."""
    tree = scratch / "tree"
    for deb in debs:
        run(["dpkg-deb", "-x", str(deb.path), str(tree)])
    members = release.members(tree, release.version, arch)
    target = out / Path(release.path(arch)).name
    if release.archive:
        files = [Entry(name, source.read_bytes()) for name, source in members]
        write_tarball(target, files + [Entry(d, None) for d in _directories([f.name for f in files])])
    else:
        [(_, source)] = members
        shutil.copyfile(source, target)
        target.chmod(ARCHIVE_MODE)
    (out / Path(release.checksum_path(arch)).name).write_text(checksum_line(target))


def _built(cache: Path, release: Release, debs: list[Deb], arch: str) -> Path:
    """The cached build of `release` from exactly these .debs and this builder, made if missing
    (older builds of the component are dropped)."""
    key = hashlib.sha256("\n".join([Path(__file__).read_text(), arch, *(d.path.name for d in debs)]).encode())
    built = cache / "releases" / f"{release.component}-{release.version}-{key.hexdigest()[:16]}"
    with taking_turns(built.parent):
        if not built.is_dir():
            with tempfile.TemporaryDirectory(dir=built.parent, prefix=".build-") as scratch:
                out = Path(scratch) / "out"
                out.mkdir()
                _build_into(out, release, debs, arch, Path(scratch))
                out.rename(built)
            for stale in built.parent.glob(f"{release.component}-*"):  # builds of older packages or builder code
                if stale != built:
                    shutil.rmtree(stale)
    return built


def build_release_tree(root: Path, cache: Path) -> ReleaseTree:
    """Publish every release under `root` (built from the cached .debs, or downloaded once)."""
    arch = host_arch()
    debs = fetch_debs(cache, [package for release in RELEASES for package in release.packages])
    artifacts = {}
    for release in RELEASES:
        mine = [debs[package] for package in release.packages]
        _check_versions(release, mine)
        built = _built(cache, release, mine, arch)
        for published in (release.path(arch), release.checksum_path(arch)):
            (root / published).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built / Path(published).name, root / published)
        artifacts[release.component] = Artifact(
            release.component, release.version, {d.package: d.version for d in mine}, release.path(arch),
            release.checksum_path(arch), sha256_file(root / release.path(arch)), release.archive)
    return ReleaseTree(root, arch, artifacts)


def tar_members(data: bytes, wanted: dict[str, str]) -> dict[str, bytes]:
    """Files from a .tar.gz by the last part of their path: {"etcd": "etcd"} -> {"etcd": bytes} (what
    the nodes install from a release file, read here to compare)."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            base = member.name.rstrip("/").rsplit("/", 1)[-1]
            if member.isfile() and base in wanted:
                extracted = archive.extractfile(member)
                if extracted is not None:
                    found[wanted[base]] = extracted.read()
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise ValueError(f"the archive lacks {', '.join(missing)}: is the URL template pointing at the right release file?")
    return found
