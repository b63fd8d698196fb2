"""Crash-safe file writes: a crash at any instant leaves the old file or the new one, never half.

Every file khwtui writes on the operator's machine (state, certificates, keys, kubeconfigs,
the rendered bundle) goes through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from khwtui.core import crashpoints

TEMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int, crash_point: str = "") -> None:
    """Temp file beside `path` (created 0600, then `mode`), fsync, rename, fsync the folder.
    `crash_point`: the crashpoints name reached between the fsync and the rename (tests only)."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if crash_point:
            crashpoints.reached(crash_point)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


def write_if_changed(path: Path, data: bytes, mode: int) -> bool:
    """Write only when the bytes differ (so mtimes of unchanged files stay); fix a wrong mode alone."""
    try:
        same = path.read_bytes() == data
    except FileNotFoundError:
        same = False
    if same:
        if path.stat().st_mode & 0o7777 == mode:
            return False
        path.chmod(mode)
        return True
    mkdirs_private(path.parent)
    write_atomic(path, data, mode)
    return True


def mkdirs_private(folder: Path) -> None:
    """Like mkdir -p, but every folder it creates is 0700 (mkdir's parents= ignores the mode)."""
    if not folder.is_dir():
        mkdirs_private(folder.parent)
        folder.mkdir(mode=0o700, exist_ok=True)
