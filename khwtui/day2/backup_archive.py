"""The backup file: one tar archive (0600) with a manifest, refused whole when anything is off.

A backup holds what rebuilding a cluster needs: the etcd snapshot, the CA, the service-account
key pair, the Secrets encryption key and state.toml. manifest.json names the cluster, the CA's
SHA-256 (which identifies the cluster's trust root) and the SHA-256 of every other member, so a
truncated, altered or foreign file is refused before anything on a node is touched.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from khwtui.core.errors import UsageError
from khwtui.core.fsutil import write_atomic

FORMAT = 1
MANIFEST = "manifest.json"
SNAPSHOT = "etcd/snapshot.db"
STATE = "state.toml"
# The state folder's files a rebuild needs, as (member name, path under the state folder, mode).
SECRETS = (
    ("pki/ca.pem", "pki/ca.pem", 0o644),
    ("pki/ca-key.pem", "pki/ca-key.pem", 0o600),
    ("pki/service-account.pem", "pki/service-account.pem", 0o644),
    ("pki/service-account-key.pem", "pki/service-account-key.pem", 0o600),
    ("pki/encryption-key", "pki/encryption-key", 0o600),
)
CA_MEMBER = "pki/ca.pem"


@dataclass(frozen=True)
class Manifest:
    cluster: str
    created: float
    etcd_version: str
    ca_sha256: str
    members: dict[str, str]  # member name -> sha256

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "cluster": self.cluster, "created": self.created, "etcd_version": self.etcd_version,
                           "ca_sha256": self.ca_sha256, "members": self.members}, indent=2, sort_keys=True).encode()


@dataclass(frozen=True)
class Backup:
    """A verified backup: its manifest and every member's bytes."""

    manifest: Manifest
    members: dict[str, bytes]

    @property
    def snapshot(self) -> bytes:
        return self.members[SNAPSHOT]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(cluster: str, etcd_version: str, members: dict[str, bytes], now: float | None = None) -> Backup:
    """A backup of `members` (SNAPSHOT, STATE and the SECRETS) for `cluster`."""
    manifest = Manifest(cluster, time.time() if now is None else now, etcd_version, sha256(members[CA_MEMBER]),
                        {name: sha256(data) for name, data in sorted(members.items())})
    return Backup(manifest, dict(members))


def write(path: Path, backup: Backup) -> None:
    """The archive, written atomically with mode 0600 (it holds the CA key and the encryption key)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [(MANIFEST, backup.manifest.to_json()), *sorted(backup.members.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(backup.manifest.created)
            tar.addfile(info, io.BytesIO(data))
    write_atomic(path, buffer.getvalue(), 0o600)


def read(path: Path, cluster: str) -> Backup:
    """The backup in `path`, verified: a readable archive, a manifest, every member present with its
    SHA-256, and made for `cluster`. Anything else is one UsageError line (exit 2)."""
    members = _members(path)
    manifest = _manifest(path, members)
    if manifest.cluster != cluster:
        raise UsageError(f"{path}: this backup is of cluster {manifest.cluster!r}, not {cluster!r}; "
                         "fix: restore it with that cluster's --config and --state-dir")
    for name, digest in manifest.members.items():
        if name not in members:
            raise UsageError(f"{path}: member {name} listed in the manifest is missing; the backup is incomplete, use another one")
        if sha256(members[name]) != digest:
            raise UsageError(f"{path}: member {name} does not match its SHA-256 in the manifest; the backup is damaged, use another one")
    for name in (SNAPSHOT, STATE, *(member for member, _, _ in SECRETS)):
        if name not in manifest.members:
            raise UsageError(f"{path}: the manifest lists no {name}; this is not a complete khwtui backup")
    if sha256(members[CA_MEMBER]) != manifest.ca_sha256:
        raise UsageError(f"{path}: the CA does not match the manifest's ca_sha256; the backup is damaged, use another one")
    return Backup(manifest, {name: members[name] for name in manifest.members})


def _members(path: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = {}
            for info in tar:
                if not info.isfile():
                    raise UsageError(f"{path}: member {info.name} is not a regular file; this is not a khwtui backup")
                handle = tar.extractfile(info)
                assert handle is not None  # a regular file always has one
                members[info.name] = handle.read()
            return members
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; fix: give the path `khwtui backup` printed") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UsageError(f"{path}: not a readable backup archive ({exc}); it may be truncated, use another one") from None


def _manifest(path: Path, members: dict[str, bytes]) -> Manifest:
    if MANIFEST not in members:
        raise UsageError(f"{path}: no {MANIFEST}; this is not a khwtui backup")
    try:
        raw = json.loads(members[MANIFEST])
        if raw.get("format") != FORMAT:
            raise UsageError(f"{path}: backup format {raw.get('format')!r} is not {FORMAT}; fix: restore it with the khwtui that made it")
        fields = {k: raw[k] for k in ("cluster", "created", "etcd_version", "ca_sha256", "members")}
    except (ValueError, KeyError, AttributeError) as exc:
        raise UsageError(f"{path}: {MANIFEST} is unreadable ({exc}); the backup is damaged, use another one") from None
    if not isinstance(fields["members"], dict) or not all(isinstance(v, str) for v in fields["members"].values()):
        raise UsageError(f"{path}: {MANIFEST} members is not a table of SHA-256 sums; the backup is damaged, use another one")
    return Manifest(**fields)
