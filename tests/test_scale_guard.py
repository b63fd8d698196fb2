"""`up` on a config that drops workers or changes the controller count stops with exit 2 before any stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from khwtui.cli import command_line as cli
from khwtui.model.state import NodeRecord, State, StateDir

CONFIG = """
[cluster]
name = "scale"
[provider]
kind = "local"
[topology]
controllers = {controllers}
workers = {workers}
"""


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], controllers: int, workers: int) -> tuple[int, str]:
    """A state that holds 1 controller + 3 workers, then `up --auto --only pki` with the given counts."""
    state_dir = StateDir(tmp_path / "s")
    state_dir.ensure_layout()
    nodes = {"controller-0": NodeRecord("controller-0", "controller")}
    nodes |= {f"worker-{i}": NodeRecord(f"worker-{i}", "worker") for i in range(3)}
    state_dir.save(State(cluster="scale", provider="local", nodes=nodes))
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(controllers=controllers, workers=workers))
    code = cli.main(["up", "--auto", "--only", "pki", "--config", str(config), "--state-dir", str(state_dir.path)])
    return code, capsys.readouterr().err


def test_lowering_the_worker_count_is_refused_naming_the_workers_that_would_go(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(tmp_path, capsys, controllers=1, workers=2)
    assert code == 2
    assert "topology.workers" in err and "worker-2" in err and "not yet supported" in err
    assert not (tmp_path / "s" / "pki" / "ca.pem").exists()


def test_changing_the_controller_count_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(tmp_path, capsys, controllers=3, workers=3)
    assert code == 2
    assert "topology.controllers" in err and "not yet supported" in err
