"""Regenerate screenshots/*.svg from the real app: `python tools/screenshots.py [--out DIR] [NAME ...]`.

Each picture is a scene of tests/tui/scenes.py: the app built by make_app, driven by replayed
`--json` streams (tests/tui/streams/), with a frozen clock, a fixed theme, a fixed terminal
size and timestamps in UTC, so two runs write the same bytes (a test checks that the committed
files are what this script writes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from textual.pilot import Pilot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.tui.scenes import SCENES, Scene  # noqa: E402 - after ROOT is on sys.path

DEFAULT_OUT = ROOT / "screenshots"


def shoot(scene: Scene, out: Path) -> Path:
    """Run the scene headless and save its screen as out/<name>.svg."""
    with tempfile.TemporaryDirectory(prefix="khwtui-shot-") as workdir:
        app = scene.build(Path(workdir))

        async def script(pilot: Pilot) -> None:
            await scene.prepare(pilot)
            pilot.app.save_screenshot(f"{scene.name}.svg", path=str(out))
            pilot.app.exit()

        app.run(headless=True, size=scene.size, auto_pilot=script)
    return out / f"{scene.name}.svg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the SVGs (default: screenshots/)")
    parser.add_argument("names", nargs="*", help="only these scenes (default: all)")
    args = parser.parse_args(argv)
    known = {s.name: s for s in SCENES}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown scene {', '.join(unknown)}; scenes: {', '.join(known)}")
    os.environ["TZ"] = "UTC"  # log and health timestamps
    for name in ("TEXTUAL_THEME", "NO_COLOR"):  # the user's theme and colour choices stay out of the pictures
        os.environ.pop(name, None)
    time.tzset()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(known):
        print(shoot(known[name], args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
