"""The Secrets encryption key and EncryptionConfiguration (KTHW Lab 06).

The key is made once and kept: a new key would make every Secret already stored in etcd
unreadable, so a damaged key file stops the run instead of being replaced.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from khwtui.artifacts.render import render
from khwtui.core.errors import StateError
from khwtui.core.fsutil import TEMP_SUFFIX, fsync_dir

KEY_FILE = "encryption-key"
KEY_BYTES = 32  # AES-256 for aescbc; secretbox also takes exactly 32 bytes
PROVIDERS = ("aescbc", "secretbox")


def load_or_create_key(directory: Path) -> bytes:
    """The cluster's 32-byte key from directory/encryption-key (base64, 0600, folder 0700), made on first use."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / KEY_FILE
    if not path.exists():
        _create_once(path, base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
    path.chmod(0o600)
    return _read_key(path)


def encryption_config(provider: str, key: bytes) -> str:
    """The apiserver's --encryption-provider-config: `provider` with key1, then identity for old data."""
    if provider not in PROVIDERS:
        raise ValueError(f"encryption provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    if len(key) != KEY_BYTES:
        raise ValueError(f"an encryption key has {KEY_BYTES} bytes, not {len(key)}")
    return render("encryption-config.yaml.j2", provider=provider, secret=base64.b64encode(key).decode("ascii"))


def _create_once(path: Path, data: bytes) -> None:
    """Write a complete temp file, then hard-link it into place: the key appears whole, or an existing one wins."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        os.unlink(temp)
    fsync_dir(path.parent)


def _read_key(path: Path) -> bytes:
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise StateError(
            f"{path} is not a base64 {KEY_BYTES}-byte key; fix: restore it from a backup "
            "(a new key would make the Secrets already stored unreadable)"
        )
    return key
