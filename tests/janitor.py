"""Removes host objects that earlier test runs left behind (a crashed or killed pytest).

Test prefixes are "kt" + the pytest PID (6 hex digits) + a counter (2 hex digits). Clusters that
tests build through the CLI get the product's own per-cluster prefix ("kh" + hash); the test
registers it (`register`) with its PID in a registry folder. A prefix whose PID no longer runs
Python belongs to a finished run, so every host object carrying it is stale:
its node processes are killed by PID (after checking their command line), then its mounts,
cgroups, network namespaces, links and iptables chains are removed. Live runs are left alone.
Sweeps take turns (an exclusive lock): with `pytest -n N` every worker sweeps as its session starts,
and two removing the same dead run's objects at once would each find it there and one fail.
The host's kernel settings held for clusters whose nodes are gone are released (restored when no
local cluster runs any more).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
from pathlib import Path

from khwtui.providers import nspawn
from khwtui.providers.host_tunables import HostTunables

FAMILY = "kt[0-9a-f]{8}"
MAX_PREFIXES = 256
REGISTRY = Path("/run/khwtui-tests")
LOCK = ".sweep.lock"  # in REGISTRY
_counter = itertools.count()


def register(prefix: str) -> None:
    """Remember that this pytest process owns `prefix` (a CLI-built cluster's "kh" prefix)."""
    REGISTRY.mkdir(mode=0o700, exist_ok=True)
    draft = REGISTRY / f".{prefix}"  # renamed into place: a sweep never reads a half-written PID
    draft.write_text(str(os.getpid()))
    draft.replace(REGISTRY / prefix)


def _registered() -> dict[str, int]:
    if not REGISTRY.is_dir():
        return {}
    return {entry.name: int(entry.read_text() or 0) for entry in REGISTRY.iterdir() if not entry.name.startswith(("subnet-", "."))}


def new_prefix() -> str:
    """A prefix unique to this pytest process and call."""
    number = next(_counter)
    if number >= MAX_PREFIXES:
        raise RuntimeError(f"more than {MAX_PREFIXES} test prefixes in one session")
    return f"kt{os.getpid():06x}{number:02x}"


def claim_subnet() -> int:
    """A second octet for a test cluster's node CIDR (10.N.0.0/24) that no live test process holds
    and no host route touches: claimed by creating REGISTRY/subnet-N with this PID, so parallel
    pytest processes (xdist workers, another session) never build bridges on the same network."""
    REGISTRY.mkdir(mode=0o700, exist_ok=True)
    for number in range(240, 15, -1):
        claim = REGISTRY / f"subnet-{number}"
        if claim.exists() and _pid_runs_tests(int(claim.read_text() or 0)):
            continue
        claim.unlink(missing_ok=True)
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue  # another process claimed it between the look and the create
        with os.fdopen(fd, "w") as out:
            out.write(str(os.getpid()))
        if not nspawn.routes_overlapping(f"10.{number}.0.0/16", ignore_dev=""):
            return number
    raise RuntimeError(f"no free 10.N.0.0/16 for a test cluster (claims in {REGISTRY})")


def _pid_runs_tests(pid: int) -> bool:
    argv = nspawn.cmdline(pid)
    return any("python" in arg or "pytest" in arg for arg in argv[:3])


def owner(prefix: str) -> int:
    registered = _registered()
    return registered[prefix] if prefix in registered else int(prefix[2:8], 16)


def _owner_runs(prefix: str) -> bool:
    return _pid_runs_tests(owner(prefix))


def sweep(include_own: bool = False) -> list[str]:
    """Remove stale test objects (and, with include_own, this session's); returns what was done."""
    if os.geteuid() != 0:
        return []  # without root no test could have made any
    REGISTRY.mkdir(mode=0o700, exist_ok=True)
    with open(REGISTRY / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _sweep(include_own)


def _sweep(include_own: bool) -> list[str]:
    registered = _registered()
    family = "|".join([FAMILY, *map(re.escape, registered)])
    stale = [
        obj
        for obj in nspawn.discover(family)
        if not _owner_runs(obj.prefix) or (include_own and owner(obj.prefix) == os.getpid())
    ]
    done: list[str] = []
    nspawn.remove(stale, done.append)
    for prefix in registered:
        if not _owner_runs(prefix) or (include_own and owner(prefix) == os.getpid()):
            (REGISTRY / prefix).unlink(missing_ok=True)
    # clusters ended without `down` (killed runs, gcp-backed nodes) still hold the host's kernel
    # settings: drop every holder whose nodes no longer run; the last one out restores them
    running = {m.prefix for m in nspawn.machine_processes(nspawn.PREFIX_PATTERN)}
    done += HostTunables().release("", running)
    return done
