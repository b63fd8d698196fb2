"""The README stays true: its first commands, and a reference row for every config key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from khwtui.model.config import Config

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_the_readme_opens_with_setup_then_the_test_command_that_ci_runs() -> None:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands[:2] == ["sudo bash .ci/setup", "sudo python3 -m pytest -q -n 3"]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "bash .ci/setup" in ci and "python3 -m pytest -q -n 3 " in ci


def test_every_config_key_has_a_reference_row() -> None:
    for section in dataclasses.fields(Config):
        if section.name in ("path", "sources"):
            continue
        for key in dataclasses.fields(section.default):
            assert f"| `{section.name}.{key.name}` |" in README, f"{section.name}.{key.name} missing from README"
