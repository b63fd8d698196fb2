"""What stands behind an instance: its reachable address and its real SSH host keys.

A test can back instances with local nspawn nodes by passing its own InstanceBacking (see
tests/gcp_backing.py); without one, GeneratedBacking gives each instance a loopback address and a
freshly generated key. A backing that needs the instance's metadata (ssh-keys) reads it from
FakeCompute.instance_metadata, as a guest agent reads the metadata server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class InstanceBacking(Protocol):
    def create(self, name: str, network_ip: str) -> tuple[str, dict[str, str]]:
        """Bring up the machine for an instance; return (address reported as natIP, host keys
        by type, e.g. {"ssh-ed25519": "AAAA..."})."""

    def delete(self, name: str) -> None:
        """Remove the machine behind a deleted instance."""

    def stop(self, name: str) -> None:
        """Power the machine off, keeping its disk (instances.stop)."""

    def start(self, name: str) -> str:
        """Power it on again (instances.start); return its new external address."""


class GeneratedBacking:
    """No machine: a distinct loopback address and a real ed25519 host key per instance.

    The private keys are kept so a test can serve SSH with exactly the key that was published.
    """

    def __init__(self, allocate_ip: Callable[[], str]) -> None:
        self._allocate_ip = allocate_ip
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._lock = threading.Lock()

    def create(self, name: str, network_ip: str) -> tuple[str, dict[str, str]]:
        key = Ed25519PrivateKey.generate()
        with self._lock:
            self._keys[name] = key
        return self._allocate_ip(), {"ssh-ed25519": public_key_base64(key)}

    def delete(self, name: str) -> None:
        with self._lock:
            self._keys.pop(name, None)

    def stop(self, name: str) -> None:
        """Nothing runs: the key stays, as a stopped instance keeps its disk."""

    def start(self, name: str) -> str:
        return self._allocate_ip()  # a new ephemeral address, as GCE gives on start

    def private_key(self, name: str) -> Ed25519PrivateKey:
        with self._lock:
            return self._keys[name]


def public_key_base64(key: Ed25519PrivateKey) -> str:
    """The base64 blob of an OpenSSH public key line, as guest attributes publish it."""
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line.decode().split()[1]
