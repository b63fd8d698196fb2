"""The release files a stage installs, as a script downloads them: URL, the SHA-256 to verify
against (pinned, or read from the official published sum file), and the members to take out.

The rule is khwtui.transport.binaries': a pinned sum wins; only an unchanged official URL may be checked
against the sum its project publishes; anything else needs a pin, else the export stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from khwtui.core.errors import ConfigError
from khwtui.model.config import Config
from khwtui.transport.binaries import COMPONENTS, Binaries

ARCH = "amd64"


@dataclass(frozen=True)
class Download:
    component: str
    file: str  # the file name (the key in [binaries.sha256])
    url: str
    sha256: str  # "" when the script reads it from sums_url
    sums_url: str
    members: tuple[tuple[str, str], ...]  # (name in the archive, path on the node)
    archive: bool  # False: the file itself is the program, installed at members[0][1]


def download(config: Config, component: str, version: str, members: dict[str, str] | None = None, name: str = "",
             path: str = "") -> Download:
    """One verified download: an archive's `members` (name -> node path), or a bare file to `path`."""
    binaries = Binaries(config, Path())  # only URLs are asked for: the cache is never read
    url = binaries.url(component, version, ARCH, name)
    file = url.rsplit("/", 1)[-1]
    pinned = config.binaries.sha256.get(file, "")
    official = COMPONENTS[component].url.format(version=version, arch=ARCH, name=name)
    sums = ""
    if not pinned:
        if url != official or not url.startswith("https://"):
            raise ConfigError(
                f"binaries.sha256.{file}",
                f"no pinned SHA-256 for {file}, which comes from {url} rather than its official origin",
                f'add "{file}" = "<sha256>" under [binaries.sha256]',
            )
        sums = COMPONENTS[component].published_sum.format(url=url, version=version, arch=ARCH, name=name)
    found = tuple(sorted(members.items())) if members else ((file, path),)
    return Download(component, file, url, pinned, sums, found, archive=bool(members))
