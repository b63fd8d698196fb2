"""Release binaries: URL templates, the expected SHA-256 of each file, and the operator's cache.

`resolve` says where a file comes from and which SHA-256 it must have, without downloading it:
the pinned sum in `[binaries.sha256]`; else, for an unchanged official URL only, the sum the
project publishes beside the file over HTTPS. A file fetched through a mirror or a custom URL
needs a pinned sum: a mirror could serve a tampered file with a matching checksum file. Nodes
download and verify files themselves (release_install); `fetch` is for push delivery: it streams
a file into the operator's cache and keeps it only once its sum is verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from khwtui.core.errors import ConfigError, OperationError, UserError
from khwtui.core.fsutil import mkdirs_private
from khwtui.model.config import Config


@dataclass(frozen=True)
class Component:
    url: str  # official template: {version} {arch} {name}
    published_sum: str  # template of the official checksum file; {url} is the file's own URL


GH = "https://github.com"
COMPONENTS: dict[str, Component] = {
    "etcd": Component(
        f"{GH}/etcd-io/etcd/releases/download/v{{version}}/etcd-v{{version}}-linux-{{arch}}.tar.gz",
        f"{GH}/etcd-io/etcd/releases/download/v{{version}}/SHA256SUMS",
    ),
    "containerd": Component(
        f"{GH}/containerd/containerd/releases/download/v{{version}}/containerd-{{version}}-linux-{{arch}}.tar.gz",
        "{url}.sha256sum",
    ),
    "runc": Component(
        f"{GH}/opencontainers/runc/releases/download/v{{version}}/runc.{{arch}}",
        f"{GH}/opencontainers/runc/releases/download/v{{version}}/runc.sha256sum",
    ),
    "cni_plugins": Component(
        f"{GH}/containernetworking/plugins/releases/download/v{{version}}/cni-plugins-linux-{{arch}}-v{{version}}.tgz",
        "{url}.sha256",
    ),
    "crictl": Component(
        f"{GH}/kubernetes-sigs/cri-tools/releases/download/v{{version}}/crictl-v{{version}}-linux-{{arch}}.tar.gz",
        "{url}.sha256",
    ),
    "kubernetes": Component("https://dl.k8s.io/release/v{version}/bin/linux/{arch}/{name}", "{url}.sha256"),
}

Opener = Callable[[str], io.BufferedIOBase]  # a readable response for a URL
CHUNK = 1 << 20
FIX_DOWNLOAD = 'fix: check the URL, set binaries.mirror to a mirror this machine can reach, or pin binaries.urls'


class ChecksumMismatch(OperationError):
    """A downloaded file is not the one pinned: refused, nothing of it is installed."""


class DownloadFailed(OperationError):
    """A URL could not be read on this machine; names the URL, the cause and the fix."""


def _open(url: str) -> io.BufferedIOBase:
    return urllib.request.urlopen(url, timeout=120)  # http(s)/file URLs from config only


@contextlib.contextmanager
def _reading(opener: Opener, url: str) -> Iterator[io.BufferedIOBase]:
    """The response for `url`; any failure becomes one line with the URL, the cause and the fix."""
    try:
        with opener(url) as response:
            yield response
    except (urllib.error.URLError, OSError, ValueError) as exc:
        cause = getattr(exc, "reason", None) or exc
        raise DownloadFailed(f"downloading {url} on this machine failed ({cause}); {FIX_DOWNLOAD}") from None


@dataclass(frozen=True)
class Resolved:
    """Where one release file comes from and the SHA-256 it must have."""

    name: str  # the file name, also the key in [binaries.sha256]
    url: str
    sha256: str


@dataclass(frozen=True)
class Artifact:
    """A verified release file in the operator's cache."""

    name: str
    url: str
    sha256: str
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


class Binaries:
    """Resolves, downloads (once, into `cache`) and verifies release files."""

    def __init__(self, config: Config, cache: Path, opener: Opener = _open) -> None:
        self.config = config
        self.cache = cache
        self.opener = opener

    def url(self, component: str, version: str, arch: str = "amd64", name: str = "") -> str:
        template = self.config.binaries.urls.get(component) or self._default(component)
        return template.format(version=version, arch=arch, name=name)

    def _default(self, component: str) -> str:
        official = COMPONENTS[component].url
        if not self.config.binaries.mirror:
            return official
        parsed = urlparse(official)
        return self.config.binaries.mirror.rstrip("/") + parsed.path

    def _is_official(self, component: str, url: str, version: str, arch: str, name: str) -> bool:
        return url == COMPONENTS[component].url.format(version=version, arch=arch, name=name) and url.startswith("https://")

    def resolve(self, component: str, version: str, arch: str = "amd64", name: str = "") -> Resolved:
        """The URL and the expected SHA-256; downloads at most the project's published checksum file."""
        url = self.url(component, version, arch, name)
        file = url.rsplit("/", 1)[-1]
        return Resolved(file, url, self._expected_sum(component, url, file, version, arch, name))

    def fetch(self, component: str, version: str, arch: str = "amd64", name: str = "") -> Artifact:
        """The verified file in the cache, streamed there in chunks (never whole in memory); a
        mismatch raises ChecksumMismatch and nothing is kept."""
        return self.fetch_resolved(self.resolve(component, version, arch, name))

    def fetch_resolved(self, resolved: Resolved) -> Artifact:
        cached = self.cache / f"{resolved.sha256}-{resolved.name}"
        if cached.is_file() and file_sha256(cached) == resolved.sha256:
            return Artifact(resolved.name, resolved.url, resolved.sha256, cached)
        mkdirs_private(self.cache)
        # its own partial file: another khwtui run may be streaming the same file into this cache
        handle, name = tempfile.mkstemp(prefix=f"{cached.name}.", suffix=".part", dir=self.cache)
        part = Path(name)
        digest = hashlib.sha256()
        try:
            with os.fdopen(handle, "wb") as out, _reading(self.opener, resolved.url) as response:
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != resolved.sha256:
                raise ChecksumMismatch(f"{resolved.name} from {resolved.url}, downloaded on this machine, has SHA-256 "
                                       f"{digest.hexdigest()}, expected {resolved.sha256}; refused, nothing of it was installed; "
                                       "fix: check binaries.mirror and the pinned sum in binaries.sha256")
            os.chmod(part, 0o644)
            os.replace(part, cached)
        finally:
            part.unlink(missing_ok=True)
        return Artifact(resolved.name, resolved.url, resolved.sha256, cached)

    def _expected_sum(self, component: str, url: str, file: str, version: str, arch: str, name: str) -> str:
        pinned = self.config.binaries.sha256.get(file)
        if pinned:
            return pinned
        if not self._is_official(component, url, version, arch, name):
            raise ConfigError(
                f"binaries.sha256.{file}",
                f"no pinned SHA-256 for {file}, which comes from {url} rather than its official origin",
                f'add "{file}" = "<sha256>" under [binaries.sha256]',
            )
        sums_url = COMPONENTS[component].published_sum.format(url=url, version=version, arch=arch, name=name)
        with _reading(self.opener, sums_url) as response:
            text = response.read().decode("utf-8", "replace")
        return published_sum(text, file, sums_url)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def published_sum(text: str, file: str, where: str) -> str:
    """Read a sha256sum-style file: either a bare digest or lines of `<digest>  <file name>`."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 1 and len(parts[0]) == 64:
            return parts[0].lower()
        if len(parts) >= 2 and parts[-1].lstrip("*").rsplit("/", 1)[-1] == file:
            return parts[0].lower()
    raise UserError(f"{where} lists no SHA-256 for {file}; pin it under [binaries.sha256]")
