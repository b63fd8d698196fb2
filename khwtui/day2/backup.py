"""`khwtui backup` and `khwtui restore`: the etcd snapshot and what a rebuild needs, and back.

Restore works on the same cluster or on one rebuilt with the backup's CA and encryption key (a
snapshot's Secrets only decrypt with the key they were written with, and every certificate on
the nodes must chain to the CA the apiservers trust). On a state folder that has no CA yet,
restore first seeds the backup's CA, service-account keys and encryption key into it, so `up`
rebuilds the cluster with them; then `restore` again brings the data back.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from khwtui.core.errors import EXIT_FAILED, EXIT_OK, UsageError
from khwtui.core.events import PASSED
from khwtui.core.fsutil import write_atomic
from khwtui.core.outcome import Outcome
from khwtui.day2 import backup_archive as archive
from khwtui.day2.operation import require_nodes, run_operation
from khwtui.model.cluster import Cluster
from khwtui.toolkit.run_context import RunContext


@dataclass(frozen=True)
class RestoreResult:
    outcomes: list[Outcome]

    @property
    def ok(self) -> bool:
        return all(o.result == PASSED for o in self.outcomes)


def default_out(cluster: Cluster, now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return Path(f"{cluster.config.cluster.name}-{stamp}.khwtui-backup.tar.gz")


def take_backup(cluster: Cluster, out: Path) -> archive.Backup:
    """Snapshot etcd and write the archive to `out` (refused if it exists: a backup is never overwritten)."""
    if out.exists():
        raise UsageError(f"--out: {out} exists; fix: give a new file name (a backup is never overwritten)")
    if not out.parent.is_dir():
        raise UsageError(f"--out: folder {out.parent} does not exist; fix: create it or give another path")
    require_nodes(cluster, "etcd")
    from khwtui.day2.etcd_recovery import save_snapshot

    members = {archive.SNAPSHOT: run_operation(cluster, "backup", save_snapshot)}
    members[archive.STATE] = cluster.state_dir.state_file.read_bytes()
    for member, relative, _ in archive.SECRETS:
        members[member] = _state_file(cluster, relative).read_bytes()
    made = archive.build(cluster.config.cluster.name, cluster.config.versions.etcd, members)
    archive.write(out, made)
    return made


def _state_file(cluster: Cluster, relative: str) -> Path:
    path = cluster.state_dir.path / relative
    if not path.is_file():
        raise UsageError(f"{path} is missing, so the backup could not rebuild this cluster; fix: run `khwtui up --until encryption`")
    return path


def seed_state(cluster: Cluster, backup: archive.Backup) -> list[str]:
    """Put the backup's CA, service-account keys and encryption key into a state folder without a CA."""
    cluster.state_dir.ensure_layout()
    written = []
    for member, relative, mode in archive.SECRETS:
        write_atomic(cluster.state_dir.path / relative, backup.members[member], mode)
        written.append(relative)
    return written


def identity_problem(cluster: Cluster, backup: archive.Backup) -> str | None:
    """Why this cluster cannot take the backup's data (another CA or encryption key), or None."""
    for member, relative, _ in archive.SECRETS:
        if member not in (archive.CA_MEMBER, "pki/encryption-key"):
            continue
        path = cluster.state_dir.path / relative
        have = archive.sha256(path.read_bytes()) if path.is_file() else None
        if have != backup.manifest.members[member]:
            return (f"this cluster's {relative} is not the backup's, so the restored data would not fit it; "
                    f"fix: restore into a state folder without a CA (restore seeds the backup's), then `khwtui up`")
    return None


def restore_backup(cluster: Cluster, backup: archive.Backup) -> RestoreResult:
    from khwtui.day2.etcd_recovery import restore
    from khwtui.stages.etcd import EtcdStage

    async def work(run: RunContext) -> list[Outcome]:
        await restore(run, backup.snapshot)
        return await EtcdStage().check(run)

    return RestoreResult(run_operation(cluster, "restore", work))


# --- the two commands ----------------------------------------------------------------------


def backup_command(cluster: Cluster, out: str | None) -> int:
    path = Path(out) if out else default_out(cluster)
    made = take_backup(cluster, path)
    size = len(made.snapshot)
    print(f"backup of cluster {cluster.config.cluster.name} written to {path} (mode 0600): etcd snapshot ({size} bytes), "
          "CA, service-account key pair, encryption key and state.toml, with a SHA-256 manifest")
    print("keep it private: it holds the CA key and the Secrets encryption key")
    return EXIT_OK


def restore_command(cluster: Cluster, file: str, yes: bool) -> int:
    from khwtui.engine.teardown import confirm

    path = Path(file)
    backup = archive.read(path, cluster.config.cluster.name)
    if not (cluster.state_dir.pki_dir / "ca.pem").is_file():
        seeded = seed_state(cluster, backup)
        print(f"this state folder had no CA: seeded {', '.join(seeded)} from {path}")
        print(f"next: build the cluster with them (`khwtui up`, at least `--until etcd`), then run `khwtui restore {path}` again")
        return EXIT_OK
    problem = identity_problem(cluster, backup)
    if problem:
        raise UsageError(f"{path}: {problem}")
    require_nodes(cluster, "etcd")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(backup.manifest.created))
    print(f"restore etcd of cluster {cluster.config.cluster.name} to the backup of {when}: the apiservers and etcd stop, "
          "every member's data is replaced, and whatever was written since is lost")
    if not yes and not confirm(cluster.config.cluster.name, sys.stdin, "restore", "nothing was stopped", "restore it"):
        print("nothing was stopped")
        return EXIT_FAILED
    result = restore_backup(cluster, backup)
    for o in result.outcomes:
        print(f"{'✔' if o.result == PASSED else '✖'} {o.check}{f' on {o.node}' if o.node else ''}: {o.evidence.strip().splitlines()[-1] if o.evidence.strip() else ''}")
    print("restored" if result.ok else "restored, but etcd's checks failed (see above)")
    return EXIT_OK if result.ok else EXIT_FAILED
