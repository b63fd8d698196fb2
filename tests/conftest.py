"""Session fixtures: the janitor for stale host objects, and unique prefixes for new ones."""

from __future__ import annotations

import os
from collections.abc import Iterator

import janitor
import pytest


@pytest.fixture(scope="session", autouse=True)
def _janitor() -> Iterator[None]:
    janitor.sweep()
    yield
    janitor.sweep(include_own=True)


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
    """The test mirror's release tree served on 127.0.0.1: {"versions", "binaries", "tree", "server"}."""
    from mirror import default_cache
    from mirror.server import MirrorServer
    from mirror.tarballs import build_release_tree

    tree = build_release_tree(tmp_path_factory.mktemp("releases"), default_cache())
    with MirrorServer(tree.root) as server:
        yield {**tree.config(server.url), "tree": tree, "server": server}
