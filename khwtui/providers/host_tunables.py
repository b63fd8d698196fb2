"""The kernel settings a kubelet needs, set on the host for local nodes, which share its kernel.

At start the kubelet reads six kernel tunables and writes each one that differs; a write that fails
ends it (kubernetes v1.36.0 pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables; the
values are k8s.io/component-helpers/node/util/sysctl's). systemd-nspawn nodes see /proc/sys/kernel
and /proc/sys/vm read-only, so the local provider sets them on the host before the nodes boot; a
kubelet on any real machine would have changed the same kernel-wide values itself.

One record per host, in /run (a reboot resets both the kernel and the record), says what each value
was before khwtui changed it and which clusters hold it. `down` of the last holder puts back only the
values khwtui changed and nobody changed since.
"""

from __future__ import annotations

import fcntl
import os
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from khwtui.providers.nspawn import HostError

KUBELET_TUNABLES = {"vm.overcommit_memory": "1", "vm.panic_on_oom": "0", "kernel.panic": "10",
                    "kernel.panic_on_oops": "1", "kernel.keys.root_maxkeys": "1000000",
                    "kernel.keys.root_maxbytes": "25000000"}
PROC_SYS = Path("/proc/sys")
RECORD = Path("/run/khwtui/kernel-tunables.toml")


@dataclass
class Record:
    """What khwtui changed on this host: the values before, and the clusters (prefixes) holding them."""

    before: dict[str, str] = field(default_factory=dict)
    holders: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HostTunables:
    proc_sys: Path = PROC_SYS
    record: Path = RECORD

    def read(self, key: str) -> str:
        return (self.proc_sys / key.replace(".", "/")).read_text().strip()

    def _write(self, key: str, value: str) -> None:
        try:
            (self.proc_sys / key.replace(".", "/")).write_text(value)
        except OSError as exc:
            raise HostError(f"cannot set the kernel setting {key} to {value} on this host ({exc.strerror}); the kubelet on local nodes needs it") from None

    def to_change(self) -> dict[str, str]:
        """key -> its value now, for each tunable that differs from the kubelet's (for the plan)."""
        return {key: now for key, wanted in KUBELET_TUNABLES.items() if (now := self.read(key)) != wanted}

    def hold(self, prefix: str) -> list[str]:
        """Set every tunable the kubelet needs and record `prefix` as a holder; the changes made."""
        with self._locked() as record:
            changes = []
            for key, before in self.to_change().items():
                record.before.setdefault(key, before)
                self._write(key, KUBELET_TUNABLES[key])
                changes.append(f"kernel setting {key} {before} -> {KUBELET_TUNABLES[key]} on this host (the kubelet needs it; down restores it)")
            if prefix not in record.holders:
                record.holders.append(prefix)
            return changes

    def held_by(self, prefix: str) -> bool:
        return self.record.exists() and prefix in self._load().holders

    def release(self, prefix: str, present: Iterable[str]) -> list[str]:
        """Drop `prefix` (and holders with nothing left on the host, `present` being those with
        something); the last one out restores what khwtui changed."""
        if not self.record.exists():
            return []
        here = set(present)
        with self._locked() as record:
            record.holders = [h for h in record.holders if h != prefix and h in here]
            if record.holders:
                return []
            restored = []
            for key, before in record.before.items():
                if self.read(key) == KUBELET_TUNABLES[key]:  # changed since by someone else: theirs now
                    self._write(key, before)
                    restored.append(f"kernel setting {key} back to {before}")
            record.before.clear()
            return restored

    def _load(self) -> Record:
        raw = tomllib.loads(self.record.read_text()) if self.record.exists() else {}
        return Record(dict(raw.get("before", {})), list(raw.get("holders", [])))

    @contextmanager
    def _locked(self) -> Iterator[Record]:
        """The record under an exclusive lock, saved on exit (removed once nobody holds anything)."""
        self.record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.record.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            record = self._load()
            try:
                yield record
            finally:
                self._save(record)
        finally:
            os.close(fd)

    def _save(self, record: Record) -> None:
        if not (record.holders or record.before):
            self.record.unlink(missing_ok=True)
            return
        temp = self.record.with_name(f".{self.record.name}.{os.getpid()}.tmp")
        temp.write_text(tomli_w.dumps({"before": record.before, "holders": record.holders}))
        temp.replace(self.record)
