"""Session fixtures: the janitor for stale host objects, and unique prefixes for new ones."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import janitor
import pytest

if TYPE_CHECKING:
    from mirror.aptrepo import AptRepo

# pytest-xdist workers (gw0, gw1, ...) each get their own loopback block for the Compute API fake's
# external addresses, so two gcp beds at once never listen on the same address
os.environ.setdefault("FAKEGCE_LOOPBACK_BLOCK", str(int(os.environ.get("PYTEST_XDIST_WORKER", "gw-1")[2:]) + 1))


@pytest.fixture(scope="session", autouse=True)
def _janitor() -> Iterator[None]:
    janitor.sweep()
    yield
    janitor.sweep(include_own=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that boot nodes run first, each in collection order: with `-n N --dist loadfile` the
    long files start early and the quick ones fill the workers' gaps at the end."""
    boots = {item.path for item in items if item.get_closest_marker("integration")}
    items.sort(key=lambda item: item.path not in boots)  # stable: the order within a file holds


@pytest.fixture
def unique_prefix() -> str:
    """A host-object prefix ("kt" + pid + counter) no other test or run uses."""
    return janitor.new_prefix()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """In CI (CI=true) any skipped test is a failure: a skip would hide that nothing was checked."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true":
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {report.longrepr}"


@pytest.fixture(scope="session")
def release_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The test mirror served on 127.0.0.1: Debian's etcd/containerd/runc/CNI in upstream layouts plus
    the kube-* stand-ins for K8S_VERSION. {"versions", "binaries", "tree", "server"}."""
    from localcluster import serve_release_mirror

    with serve_release_mirror(tmp_path_factory.mktemp("releases")) as mirror:
        yield mirror


@pytest.fixture(scope="session")
def apt_repo(tmp_path_factory: pytest.TempPathFactory) -> AptRepo:
    """The signed apt repository the nodes install OS packages (and the stand-ins' python3) from."""
    from mirror import default_cache
    from mirror.aptrepo import NODE_PACKAGES, build_apt_repo

    return build_apt_repo(tmp_path_factory.mktemp("apt"), default_cache(), list(NODE_PACKAGES))
