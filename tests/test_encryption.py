"""The encryption key is made once and kept private; the config is the apiserver's v1 format."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from khwtui.artifacts.encryption import encryption_config, load_or_create_key
from khwtui.core.errors import StateError

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_key_is_made_once_private_and_returned_unchanged_afterwards(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "pki"
    first = load_or_create_key(folder)
    key_file = folder / "encryption-key"

    assert len(first) == 32
    assert base64.b64decode(key_file.read_text().strip(), validate=True) == first
    assert (mode(folder), mode(key_file)) == (0o700, 0o600)
    assert load_or_create_key(folder) == first
    assert sorted(p.name for p in folder.iterdir()) == ["encryption-key"]  # no temp file left behind


def test_loose_modes_are_tightened_and_the_key_is_kept(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path)
    tmp_path.chmod(0o755)
    (tmp_path / "encryption-key").chmod(0o644)

    assert load_or_create_key(tmp_path) == first
    assert (mode(tmp_path), mode(tmp_path / "encryption-key")) == (0o700, 0o600)


@pytest.mark.parametrize("content", [b"", b"not base64!\n", base64.b64encode(bytes(16)) + b"\n"])
def test_a_damaged_key_stops_the_run_instead_of_being_replaced(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / "encryption-key"
    key_file.write_bytes(content)

    with pytest.raises(StateError, match="restore it from a backup"):
        load_or_create_key(tmp_path)
    assert key_file.read_bytes() == content


@pytest.mark.parametrize("provider", ["aescbc", "secretbox"])
def test_the_config_is_an_encryption_configuration_for_secrets_with_identity_last(provider: str) -> None:
    assert encryption_config(provider, KEY) == f"""\
kind: EncryptionConfiguration
apiVersion: apiserver.config.k8s.io/v1
resources:
  - resources:
      - secrets
    providers:
      - {provider}:
          keys:
            - name: key1
              secret: {KEY_B64}
      - identity: {{}}
"""


def test_a_wrong_provider_or_key_length_is_refused() -> None:
    with pytest.raises(ValueError, match="kms"):
        encryption_config("kms", KEY)
    with pytest.raises(ValueError, match="32 bytes, not 16"):
        encryption_config("aescbc", bytes(16))
