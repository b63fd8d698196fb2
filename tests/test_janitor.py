"""The janitor's sweep when several pytest processes start at once (`-n 3`: every xdist worker sweeps
as its session starts) and a killed run left host objects behind: each object is removed exactly
once, and no sweeper fails because another one removed it first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from khwtui.providers import nspawn

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="host objects need root")

SWEEPERS = 3
MOUNTS = 24
GONE_PID = 0x3FFFFD  # above any pid_max this machine allows: the run that made them is gone
SWEEP = "import janitor, sys\nsys.stdin.read()\nprint('\\n'.join(janitor.sweep()))"


def stale_mounts(root: Path) -> list[Path]:
    """Overlay mounts whose source carries prefixes of a run that no longer exists."""
    targets = []
    for number in range(MOUNTS):
        prefix = f"kt{GONE_PID:06x}{number:02x}"
        layers = [root / str(number) / part for part in ("lower", "upper", "work", "root")]
        for layer in layers:
            layer.mkdir(parents=True)
        lower, upper, work, target = layers
        nspawn.mount_overlay(f"{prefix}-node", lower, upper, work, target)
        targets.append(target)
    return targets


def test_sweepers_that_start_together_remove_a_dead_runs_mounts_once_and_all_succeed(tmp_path: Path) -> None:
    assert not Path(f"/proc/{GONE_PID}").exists()
    targets = stale_mounts(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    try:
        sweepers = [subprocess.Popen([sys.executable, "-c", SWEEP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(SWEEPERS)]
        for sweeper in sweepers:  # all wait on stdin: closing it starts them as close together as can be
            sweeper.stdin.close()  # type: ignore[union-attr]
        results = [(sweeper.wait(timeout=120), sweeper.stdout.read(), sweeper.stderr.read()) for sweeper in sweepers]  # type: ignore[union-attr]
        assert [code for code, _, _ in results] == [0] * SWEEPERS, [err[-600:] for _, _, err in results]
        unmounted = [line for _, out, _ in results for line in out.splitlines() if line.startswith("unmounted ")]
        assert sorted(unmounted) == sorted(f"unmounted {target}" for target in targets)
        assert not any(nspawn.is_mounted(target) for target in targets)
    finally:
        nspawn.unmount_under(tmp_path)
