"""Chaos on a fresh gcp build (issue 15): a few SIGKILLs at seeded random moments of `up` against
the Compute fake backed by nspawn nodes, then one run that ends with exit 0 or 3, state.toml loaded
after every kill, and every planned cloud resource present exactly once. The first kill is the
crash point `gcp.insert-sent`. benchmarks/bench_chaos.py runs the full twenty on a 3 + 2 build.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import janitor
import pytest
from chaos import DONE, Chaos, made, planned, run_with_kills
from fakegce import FakeCompute
from gcp_dataplane import LoadBalancers
from localcluster import LocalCluster
from test_gcp_local import gcp_cluster, go_offline
from workerbed import STANDIN_PACKAGES

pytestmark = pytest.mark.integration

KILLS, SEED, LATEST = 5, 15, 40.0  # CI: few kills; each later run dies within LATEST seconds


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict, apt_repo: object) -> Iterator[tuple[FakeCompute, LocalCluster, Chaos]]:
    tmp: Path = tmp_path_factory.mktemp("chaos")
    with pytest.MonkeyPatch.context() as env:
        go_offline(env, tmp)
        with gcp_cluster(tmp, janitor.new_prefix(), release_mirror, 2, 1, apt=apt_repo, packages=STANDIN_PACKAGES) as (fake, cluster), LoadBalancers(fake):
            yield fake, cluster, run_with_kills(cluster, KILLS, SEED, LATEST)


def test_after_seeded_kills_one_run_finishes_the_build(chaos: tuple[FakeCompute, LocalCluster, Chaos]) -> None:
    _, _, result = chaos
    assert result.final is not None
    assert result.final.returncode in DONE, result.final.stdout[-4000:] + result.final.stderr
    assert result.kills[0] == 0.0 and sum(k is not None for k in result.kills) >= 2, result.kills


def test_every_planned_cloud_resource_exists_exactly_once(chaos: tuple[FakeCompute, LocalCluster, Chaos]) -> None:
    fake, cluster, _ = chaos
    assert made(fake) == planned(cluster)
