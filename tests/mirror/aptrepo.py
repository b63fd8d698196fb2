"""A signed apt repository of Debian packages for the test nodes, and the .deb cache under it.

The nodes install OS packages (and the stand-ins' python3-yaml) from a repository the tests serve
on the bridge, signed by a throwaway key, so the same signed-apt path runs as on real machines.
"""

from __future__ import annotations

import gzip
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import MirrorError, run, taking_turns

NODE_PACKAGES = ("python3", "python3-yaml", "socat", "conntrack", "ipset", "iptables", "haproxy", "nginx", "curl")
COMPONENT = "main"
KEY_UID = "khwtui test apt repository <apt-test@khwtui.invalid>"
DEPENDS_FLAGS = ["--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
                 "--no-replaces", "--no-enhances"]


@dataclass(frozen=True)
class Deb:
    """One downloaded package file."""

    package: str
    version: str
    arch: str
    path: Path


@dataclass(frozen=True)
class SigningKey:
    """A passphrase-less test key: its GnuPG home (0700) and its public keyring for `signed-by=`."""

    home: Path
    fingerprint: str
    keyring: Path


@dataclass(frozen=True)
class AptRepo:
    """A dists-style repository: `deb [signed-by=keyring] URL suite component`."""

    path: Path
    suite: str
    component: str
    arch: str
    keyring: Path
    packages: dict[str, str]  # package -> version

    def source(self, url: str) -> str:
        """The one-line apt source for this repository served at `url`."""
        return f"deb [signed-by={self.keyring}] {url} {self.suite} {self.component}"


def host_arch() -> str:
    """Debian's name for this machine's architecture (upstream release names use the same)."""
    return run(["dpkg", "--print-architecture"]).decode().strip()


def host_suite() -> str:
    """The Debian codename of the host; its apt sources are where every package comes from."""
    codename = platform.freedesktop_os_release().get("VERSION_CODENAME", "")
    if not codename:
        raise MirrorError("/etc/os-release has no VERSION_CODENAME; the test mirror needs a Debian host")
    return codename


def candidates(packages: list[str]) -> dict[str, tuple[str, str]]:
    """package -> (version, arch) that the host's apt would download now."""
    out = run(["apt-cache", "show", "--no-all-versions", *packages]).decode()
    found: dict[str, tuple[str, str]] = {}
    for stanza in out.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        if "Package" in fields:
            found[fields["Package"]] = (fields["Version"], fields["Architecture"])
    missing = sorted(set(packages) - set(found))
    if missing:
        raise MirrorError(f"no apt candidate for {', '.join(missing)}; run apt-get update or fix the package list")
    return found


def deb_name(package: str, version: str, arch: str) -> str:
    """The file name apt-get download gives a package (the epoch colon escaped as %3a)."""
    return f"{package}_{version.replace(':', '%3a')}_{arch}.deb"


def fetch_debs(cache: Path, packages: list[str]) -> dict[str, Deb]:
    """The candidate .deb of each package, downloaded into `cache/debs` unless already there."""
    debs_dir = cache / "debs"
    debs_dir.mkdir(parents=True, exist_ok=True)
    debs = {name: Deb(name, version, arch, debs_dir / deb_name(name, version, arch))
            for name, (version, arch) in candidates(packages).items()}
    missing = [deb for deb in debs.values() if not deb.path.is_file()]
    if missing:
        with tempfile.TemporaryDirectory(dir=debs_dir, prefix=".download-") as partial:
            run(["apt-get", "download", *(f"{deb.package}={deb.version}" for deb in missing)], cwd=Path(partial))
            for deb in missing:
                (Path(partial) / deb.path.name).rename(deb.path)
    return debs


def resolve_dependencies(packages: list[str]) -> list[str]:
    """`packages` and everything they depend on, recursively; virtual names are left to apt."""
    out = run(["apt-cache", "depends", *DEPENDS_FLAGS, *packages]).decode()
    return sorted({line for line in out.splitlines() if line and not line.startswith((" ", "<"))})


@contextmanager
def _gpg(home: Path) -> Iterator[list[str]]:
    """A gpg command prefix for `home`; the agent gpg starts for it is stopped afterwards. Sessions
    take turns: one makes the key while the others wait, and none stops the agent under another."""
    with taking_turns(home.parent):
        try:
            yield ["gpg", "--homedir", str(home), "--batch", "--yes", "--quiet"]
        finally:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True)


def _fingerprint(gpg: list[str]) -> str:
    listing = run([*gpg, "--with-colons", "--list-secret-keys"]).decode()
    return next((line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")), "")


def signing_key(directory: Path) -> SigningKey:
    """The test signing key kept in `directory` (made on first use), with its exported keyring."""
    home = directory / "gnupg"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)
    with _gpg(home) as gpg:
        fingerprint = _fingerprint(gpg)
        if not fingerprint:
            run([*gpg, "--passphrase", "", "--quick-generate-key", KEY_UID, "ed25519", "sign", "never"])
            fingerprint = _fingerprint(gpg)
        keyring = directory / "keyring.gpg"
        keyring.write_bytes(run([*gpg, "--export", fingerprint]))
    return SigningKey(home, fingerprint, keyring)


def _write_index(root: Path, suite: str, arch: str) -> Path:
    """Packages, Packages.gz and an unsigned Release for everything in pool/."""
    dist = root / "dists" / suite
    binary = dist / COMPONENT / f"binary-{arch}"
    binary.mkdir(parents=True)
    packages = run(["apt-ftparchive", "packages", f"pool/{COMPONENT}"], cwd=root)
    (binary / "Packages").write_bytes(packages)
    (binary / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    fields = {"Origin": "khwtui-tests", "Label": "khwtui-tests", "Suite": suite, "Codename": suite,
              "Architectures": arch, "Components": COMPONENT, "Description": "khwtui test node packages"}
    options = [f"-oAPT::FTPArchive::Release::{key}={value}" for key, value in fields.items()]
    release = run(["apt-ftparchive", *options, "release", "."], cwd=dist)
    (dist / "Release").write_bytes(release)
    return dist / "Release"


def _sign(release: Path, key: SigningKey) -> None:
    """InRelease (clear-signed) and Release.gpg (detached) beside Release."""
    with _gpg(key.home) as gpg:
        signer = [*gpg, "--local-user", key.fingerprint, "--digest-algo", "SHA256"]
        run([*signer, "--clearsign", "--output", str(release.with_name("InRelease")), str(release)])
        run([*signer, "--armor", "--detach-sign", "--output", str(release.with_name("Release.gpg")), str(release)])


def build_apt_repo(root: Path, cache: Path, packages: list[str]) -> AptRepo:
    """(Re)build `root` as a signed repository of `packages` and all their dependencies.

    Everything in the closure goes in, including what a node already has: the node's apt takes
    only what it lacks, so the repo need not know the node root.
    """
    suite, arch = host_suite(), host_arch()
    debs = fetch_debs(cache, resolve_dependencies(packages))
    for old in ("dists", "pool"):
        shutil.rmtree(root / old, ignore_errors=True)
    pool = root / "pool" / COMPONENT
    pool.mkdir(parents=True)
    for deb in debs.values():
        shutil.copyfile(deb.path, pool / deb.path.name)
    key = signing_key(cache / "apt-key")
    _sign(_write_index(root, suite, arch), key)
    return AptRepo(root, suite, COMPONENT, arch, key.keyring, {d.package: d.version for d in debs.values()})
