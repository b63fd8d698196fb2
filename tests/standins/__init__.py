"""Stand-ins for the kube-* programs, which cannot be downloaded here (README.md).

`build(version)` gives the bytes installed on a node as /usr/local/bin/<program>: the harness with
the release baked in (the version /version reports, and each program's flags for that minor), so
the SHA-256 khwtui verifies covers exactly what runs. The test mirror serves those bytes under
every kube-* name of the `kubernetes` component; the harness reads its program from argv[0].
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from khwtui.model.config import version_tuple

from .flags import MINORS, PROGRAMS

HARNESS = Path(__file__).with_name("harness.py")
MARKER = re.compile(r"^RELEASE = None  # baked in .*$", re.MULTILINE)


def release(version: str) -> dict:
    """What a harness for `version` ("1.36.5") is built with: the version and every program's flags."""
    _, minor, _ = version_tuple(version)
    if minor not in MINORS:
        raise ValueError(f"the stand-ins know Kubernetes 1.{MINORS[0]}-1.{MINORS[-1]}, not {version}")
    return {"version": version, "programs": {name: program.spec(minor) for name, program in PROGRAMS.items()}}


def build(version: str) -> bytes:
    """The harness with `release(version)` baked in (same version, same bytes)."""
    baked, count = MARKER.subn(f"RELEASE = {release(version)!r}", HARNESS.read_text())
    if count != 1:
        raise RuntimeError(f"{HARNESS} must hold one line matching {MARKER.pattern!r}")
    return baked.encode()


def install(folder: Path, version: str) -> dict[str, Path]:
    """The built harness as `folder/standin` and a symlink named after each program (for local runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "standin"
    target.write_bytes(build(version))
    target.chmod(0o755)
    links = {}
    for name in PROGRAMS:
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(target.name, link)
        links[name] = link
    return links
