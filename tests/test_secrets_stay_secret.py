"""Private keys and the encryption key: 0600 in 0700 folders, and never in state.toml, logs or stdout."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from localcluster import LocalCluster, local_config

pytestmark = pytest.mark.integration


def secret_values(state_dir: Path) -> list[bytes]:
    """Every private key (its base64 body lines, and the whole PEM in base64 as kubeconfigs embed it, or
    a 64-character piece from its middle) and the encryption key, in every form they could leak."""
    values = []
    for path in [*(state_dir / "pki").glob("*-key.pem"), state_dir / "ssh" / "id_ed25519"]:
        pem = path.read_bytes()
        body = [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]
        values += [line.encode() for line in body]
        embedded = base64.b64encode(pem)  # the form every kubeconfig's client-key-data takes
        middle = len(embedded) // 2 // 4 * 4
        values += [embedded, embedded[middle:middle + 64]]
    key_text = (state_dir / "pki" / "encryption-key").read_bytes().strip()
    values += [key_text, base64.b64decode(key_text)]
    return values


def test_secrets_are_private_and_never_leak(tmp_path: Path, unique_prefix: str, release_mirror: dict) -> None:
    c = LocalCluster(tmp_path / "c", local_config(f"t{unique_prefix}", 1, 1, release_mirror))
    try:
        run = c.khwtui("up", "--auto", "--verbose", "--until", "etcd")
        assert run.returncode == 0, run.stdout + run.stderr
        json_run = c.khwtui("up", "--auto", "--json", "--until", "etcd")
        state_dir = c.state_dir
        for folder in ("pki", "ssh", "kubeconfigs"):
            assert stat.S_IMODE((state_dir / folder).stat().st_mode) == 0o700, folder
        private = [*(state_dir / "pki").glob("*-key.pem"), state_dir / "pki" / "encryption-key", state_dir / "ssh" / "id_ed25519"]
        assert len(private) >= 9
        for path in private:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        exposed = {
            "state.toml": (state_dir / "state.toml").read_bytes(),
            "stdout": (run.stdout + run.stderr + json_run.stdout + json_run.stderr).encode(),
            **{f"logs/{p.name}": p.read_bytes() for p in (state_dir / "logs").glob("*.log")},
        }
        assert len(exposed) >= 4  # the operator's log and at least one node log exist
        for secret in secret_values(state_dir):
            for where, text in exposed.items():
                assert secret not in text, f"secret bytes found in {where}"
    finally:
        c.down()
