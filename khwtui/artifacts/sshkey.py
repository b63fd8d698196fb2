"""The cluster's SSH client key: one ed25519 key per cluster, made once, 0600 in ssh/ (0700)."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from khwtui.core.fsutil import mkdirs_private, write_atomic

KEY_NAME = "id_ed25519"


def client_key(ssh_dir: Path, comment: str = "khwtui") -> tuple[Path, str]:
    """(private key path, public key in OpenSSH text) — created on first use, never replaced."""
    path = ssh_dir / KEY_NAME
    if not path.is_file():
        mkdirs_private(ssh_dir)
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        write_atomic(path, key.export_private_key("openssh"), 0o600)
    key = asyncssh.read_private_key(path)
    return path, key.export_public_key("openssh").decode().strip()
