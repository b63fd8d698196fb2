"""Engine pieces that need no nodes: slices, stage inputs, exit codes, the --json stream."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from khwtui.console.headless import ConsoleSink
from khwtui.core.errors import OperationError, UsageError, UserError
from khwtui.core.events import CheckResult, LogLines, RunFinished, StageChanged, Status, from_json
from khwtui.core.outcome import Outcome, first_problem, verdict
from khwtui.engine.runner import Engine, Selection, replay, select
from khwtui.model import config
from khwtui.model.cluster import Cluster
from khwtui.model.state import CheckRecord, StateDir
from khwtui.stages import STAGES

NAMES = [s.name for s in STAGES]


def test_until_runs_every_stage_up_to_and_including_it() -> None:
    assert select(Selection(until="etcd"), NAMES) == ["compute", "pki", "kubeconfigs", "encryption", "etcd"]


def test_from_runs_to_the_end_and_only_runs_exactly_the_named_stages_in_table_order() -> None:
    assert select(Selection(start="smoke"), NAMES) == ["smoke", "demo"]
    assert select(Selection(only=("etcd", "pki")), NAMES) == ["pki", "etcd"]


def test_an_unknown_stage_is_a_usage_error_listing_the_stages() -> None:
    with pytest.raises(UsageError, match=r"unknown stage 'etc'.*compute, pki"):
        select(Selection(only=("etc",)), NAMES)


def test_verdict_never_calls_unverified_passed() -> None:
    assert verdict([Outcome.passed("a"), Outcome.unverified("b", reason="no RBAC group")]) == "unverified"
    assert verdict([Outcome.unverified("b"), Outcome.failed("c", "n1", "boom")]) == "failed"
    assert verdict([Outcome.passed("a")]) == "passed"
    assert first_problem([Outcome.passed("a"), Outcome.failed("etcd member healthy", "controller-1", "$ etcdctl\nconnection refused")]) == (
        "controller-1: etcd member healthy — connection refused"
    )


@pytest.mark.parametrize(("stage", "first"), [("etcd", "compute"), ("routes", "compute"), ("dns", "workers")])
def test_a_stage_whose_input_is_missing_stops_with_exit_2_naming_the_stage_to_run_first(stage: str, first: str, tmp_path: Path, capsys) -> None:
    """Routes need only the nodes (on gcp they are cloud resources), so `--only routes` works
    right after compute; the workers are an input of dns."""
    from khwtui.cli.command_line import main

    code = main(["up", "--auto", "--only", stage, "--config", "configs/local.toml", "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"khwtui: stage {stage} needs stage {first} first; run `khwtui up --until {first}` (or without a slice)"]


def test_the_json_stream_is_one_object_per_line_and_replays_to_the_final_table() -> None:
    out = io.StringIO()
    sink = ConsoleSink(out, json=True)
    events = [
        StageChanged("pki", "running", at=1.0),
        LogLines("", "pki", ("certificate admin: created",), at=1.1),
        CheckResult("pki", "certificate admin", "passed", at=1.2),
        StageChanged("pki", "passed", at=1.3),
        StageChanged("etcd", "failed", "controller-0: etcd member healthy", at=2.0),
        RunFinished(1, "pki passed, etcd failed", at=2.1),
    ]
    for e in events:
        sink(e)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(events) and all(json.loads(line)["v"] == 1 for line in lines)
    assert [from_json(line) for line in lines] == events
    assert replay([from_json(line) for line in lines]) == {"pki": "passed", "etcd": "failed"}


def test_the_console_summary_lists_failures_with_the_nodes_last_lines_and_every_unverified_check() -> None:
    out = io.StringIO()
    sink = ConsoleSink(out)
    sink(StageChanged("etcd", "running", at=0.0))
    sink(LogLines("controller-1", "etcd", ("etcd[812]: bad certificate",), at=0.5))
    sink(CheckResult("etcd", "etcd member healthy", "failed", "controller-1", "$ etcdctl endpoint health\nunhealthy", at=1.0))
    sink(CheckResult("rbac", "ClusterRole read back", "unverified", "", "the API server does not advertise rbac.authorization.k8s.io", at=1.0))
    sink(StageChanged("etcd", "failed", "controller-1: etcd member healthy — unhealthy", at=1.0))
    sink(RunFinished(1, at=1.1))
    text = out.getvalue()
    assert "✖ etcd failed (1.0 s) — controller-1: etcd member healthy — unhealthy" in text
    assert "last output of controller-1:\n    etcd[812]: bad certificate" in text
    assert "? rbac · ClusterRole read back: the API server does not advertise rbac.authorization.k8s.io" in text
    assert text.rstrip().endswith("exit 1")


def test_a_state_folder_of_another_cluster_is_refused(tmp_path: Path) -> None:
    import asyncio

    folder = StateDir(tmp_path)
    state = folder.load()
    state.cluster = "someone-else"
    folder.save(state)
    cluster = Cluster(config.load("configs/local.toml"), folder, folder.load())
    engine = Engine(cluster, provider_factory=lambda c: None, remote_factory=lambda log: None)
    with pytest.raises(Exception, match="belongs to cluster 'someone-else'"):
        asyncio.run(engine.run(lambda e: None, only=["encryption"]))


class Refusing:
    """A stage whose check raises `error`, as a new error class might."""

    error: Exception

    async def check(self, run) -> list[Outcome]:
        raise self.error

    async def apply(self, run) -> None:  # never reached
        raise AssertionError("apply after a raising check")


@pytest.mark.parametrize(("kind", "code"), [(OperationError, 1), (UserError, 2)])
def test_an_error_fails_its_stage_or_stops_the_run_by_its_kind_alone(kind: type, code: int, tmp_path: Path, monkeypatch) -> None:
    """A new error class says only its kind; the engine needs nothing else to end the run right."""
    import asyncio

    import khwtui.engine.runner

    class Fresh(kind):
        pass

    stage = type("FreshStage", (Refusing,), {"error": Fresh("something new went wrong")})
    monkeypatch.setattr(khwtui.engine.runner, "stage_class", lambda name: stage)
    folder = StateDir(tmp_path)
    engine = Engine(Cluster(config.load("configs/local.toml"), folder, folder.load()), provider_factory=lambda c: None, remote_factory=lambda log: None)
    finished: list[RunFinished] = []
    run = engine.run(lambda e: finished.append(e) if isinstance(e, RunFinished) else None, only=["encryption"])
    if kind is UserError:
        with pytest.raises(Fresh):
            asyncio.run(run)
    else:
        assert asyncio.run(run) == code
    record = folder.load().stage("encryption")
    assert finished[-1].exit_code == code and "something new went wrong" in record.detail
    assert record.status == ("failed" if kind is OperationError else "pending")  # a stopped run leaves the stage to resume


def test_statuses_are_enum_members_in_memory_and_plain_words_on_disk_and_in_the_json_stream(tmp_path: Path) -> None:
    folder = StateDir(tmp_path)
    state = folder.load()
    outcome = Outcome.unverified("ca", reason="no RBAC group")
    record = state.stage("pki")
    record.status, record.checks = Status.PASSED, [CheckRecord(outcome.check, outcome.result)]
    folder.save(state)
    assert 'status = "passed"' in folder.state_file.read_text() and 'result = "unverified"' in folder.state_file.read_text()
    loaded = folder.load().stage("pki")
    assert outcome.result is Status.UNVERIFIED and loaded.status is Status.PASSED and loaded.checks[0].result is Status.UNVERIFIED
    out = io.StringIO()
    ConsoleSink(out, json=True)(StageChanged("pki", loaded.status, at=1.0))
    assert json.loads(out.getvalue())["status"] == "passed" and '"status": "passed"' in out.getvalue()
    assert from_json(out.getvalue()).status is Status.PASSED
