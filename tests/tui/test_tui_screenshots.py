"""screenshots/ is exactly what tools/screenshots.py writes: regenerate into a temp folder and
compare byte for byte (so `git diff --exit-code screenshots/` stays clean after regenerating)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_screenshots_are_what_the_script_writes(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "screenshots.py"), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=480, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = {p.name: p.read_bytes() for p in sorted(tmp_path.glob("*.svg"))}
    committed = {p.name: p.read_bytes() for p in sorted((ROOT / "screenshots").glob("*.svg"))}
    assert sorted(written) == sorted(committed)
    assert not [name for name, data in written.items() if b"PRIVATE KEY" in data or b"-----BEGIN" in data]  # no key material
    stale = [name for name, data in written.items() if committed[name] != data]
    assert not stale, f"screenshots/ is stale: run `python tools/screenshots.py` and commit {stale}"
