"""Release binaries: URL templates, a download cache, and a SHA-256 check before anything is used.

The operator's machine downloads each file once, verifies it, and only then are its bytes
sent to the nodes, so nothing reaches a node unchecked. The expected sum is, in order: the
pinned one in `[binaries.sha256]`; else, for an unchanged official URL only, the sum the
project publishes beside the file over HTTPS. A file fetched through a mirror or a custom
URL needs a pinned sum: a mirror could serve a tampered file with a matching checksum file.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from khwtui.config import Config
from khwtui.errors import ConfigError, KhwError
from khwtui.fsutil import mkdirs_private, write_atomic


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

Opener = Callable[[str], bytes]


class ChecksumMismatch(KhwError):
    """A downloaded file is not the one pinned: refused, nothing of it is installed."""

    exit_code = 1


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - http(s) URLs from config only
        return response.read()


@dataclass(frozen=True)
class Artifact:
    name: str  # the file name, also the key in [binaries.sha256]
    url: str
    sha256: str
    data: bytes


class Binaries:
    """Resolves, downloads (once, into `cache`) and verifies release files."""

    def __init__(self, config: Config, cache: Path, opener: Opener = _fetch) -> None:
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

    def fetch(self, component: str, version: str, arch: str = "amd64", name: str = "") -> Artifact:
        """The verified file; a mismatch raises ChecksumMismatch and nothing is cached."""
        url = self.url(component, version, arch, name)
        file = url.rsplit("/", 1)[-1]
        expected = self._expected_sum(component, url, file, version, arch, name)
        cached = self.cache / f"{expected}-{file}"
        if cached.is_file():
            data = cached.read_bytes()
            if hashlib.sha256(data).hexdigest() == expected:
                return Artifact(file, url, expected, data)
        data = self.opener(url)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ChecksumMismatch(f"{file} from {url} has SHA-256 {actual}, expected {expected}; refused, nothing of it was installed")
        mkdirs_private(self.cache)
        write_atomic(cached, data, 0o644)
        return Artifact(file, url, expected, data)

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
        return published_sum(self.opener(sums_url).decode("utf-8", "replace"), file, sums_url)


def published_sum(text: str, file: str, where: str) -> str:
    """Read a sha256sum-style file: either a bare digest or lines of `<digest>  <file name>`."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 1 and len(parts[0]) == 64:
            return parts[0].lower()
        if len(parts) >= 2 and parts[-1].lstrip("*").rsplit("/", 1)[-1] == file:
            return parts[0].lower()
    raise KhwError(f"{where} lists no SHA-256 for {file}; pin it under [binaries.sha256]")


def tar_members(data: bytes, wanted: dict[str, str]) -> dict[str, bytes]:
    """Files from a .tar.gz by the last part of their path: {"etcd": "etcd"} -> {"etcd": bytes}."""
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
        raise KhwError(f"the archive lacks {', '.join(missing)}: is the URL template pointing at the right release file?")
    return found
