"""Upstream's version floors and the etcd quorum, as `plan` and `up` warn about them."""

from __future__ import annotations

import pytest

from khwtui.cli.plan_warnings import CONTAINERD_FLOORS, ETCD_FLOORS, meets, plan_warnings, quorum_warning
from khwtui.model import config


@pytest.mark.parametrize(("version", "ok"), [((3, 4, 23), False), ((3, 4, 31), True), ((3, 5, 12), False), ((3, 5, 13), True),
                                             ((3, 6, 0), True), ((3, 3, 99), False)])
def test_etcd_meets_its_floor_per_release_line(version: tuple[int, int, int], ok: bool) -> None:
    assert meets(version, ETCD_FLOORS) is ok


@pytest.mark.parametrize(("minor", "version", "ok"), [(34, (1, 6, 39), True), (34, (1, 6, 20), False), (35, (1, 6, 39), False),
                                                      (35, (2, 1, 5), True), (36, (2, 1, 9), False), (37, (2, 2, 3), True),
                                                      (36, (2, 4, 0), True)])
def test_containerd_follows_the_support_table_of_the_kubernetes_minor(minor: int, version: tuple[int, int, int], ok: bool) -> None:
    assert meets(version, CONTAINERD_FLOORS[minor]) is ok


@pytest.mark.parametrize(("controllers", "warned"), [(1, False), (2, True), (3, False), (4, True), (5, False)])
def test_only_an_even_member_count_is_warned_about(controllers: int, warned: bool) -> None:
    assert (quorum_warning(controllers) is not None) is warned


def test_the_shipped_defaults_warn_only_about_the_quorum_of_two_controllers() -> None:
    assert plan_warnings(config.from_dict({}), 2) == [quorum_warning(2)]
