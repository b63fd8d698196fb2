"""The test mirror: Debian's etcd, containerd, runc and CNI plugins in upstream release layouts,
a signed apt repository for the node packages, and the HTTP server that serves both (README.md)."""

from __future__ import annotations

import fcntl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from khwtui.core.errors import OperationError


class MirrorError(OperationError):
    """Building the test mirror failed (a tool, a package or a version is not what the tests pin)."""


def default_cache() -> Path:
    """Where downloaded .debs, built tarballs and the test signing key live between runs."""
    return Path(platformdirs.user_cache_dir("khwtui-tests")) / "mirror"


@contextmanager
def taking_turns(directory: Path) -> Iterator[None]:
    """Hold `directory`'s lock for the block: test sessions that start at once on a cold cache
    (xdist workers, a second checkout) make each cached thing once. The kernel frees it on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run(args: list[str], cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    """Run a build tool and return its stdout; a failure names the command and its last error line."""
    proc = subprocess.run(args, cwd=cwd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
        raise MirrorError(f"{args[0]} failed (exit {proc.returncode}): {lines[-1]}; command: {' '.join(args)}")
    return proc.stdout
