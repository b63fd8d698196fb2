"""The engine and everything under it never import textual or rich (docs/ARCHITECTURE.md "Layers")."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import khwtui
names = [m.name for m in pkgutil.walk_packages(khwtui.__path__, "khwtui.")
         if not m.name.startswith("khwtui.tui") and m.name != "khwtui.__main__"]
for name in names:  # one at a time, so the first module that pulls them in is the one named
    importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "rich"))
    if leaked:
        print(name, "loads", leaked[0])
        break
print(len(names), "imported")
"""


def test_nothing_outside_the_tui_loads_textual_or_rich() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[:-1] == []  # else: "<module> loads textual", the first module that did
    assert int(out[-1].split()[0]) >= 60  # the walk really found the package's modules


def test_the_cli_help_does_not_load_the_tui() -> None:
    probe = "import sys\nfrom khwtui.cli.command_line import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint(any(m.startswith(('textual', 'rich')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
