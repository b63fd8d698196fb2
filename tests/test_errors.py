"""Every error is the user's (exit 2, the run stops) or the operation's (exit 1, its stage fails),
and its kind alone decides its code: a class that forgets to say which cannot be defined."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import khwtui
from khwtui.core.errors import EXIT_FAILED, EXIT_USAGE, KhwError, OperationError, UserError, combined
from khwtui.providers.gcp_api import AccessRefused, GceError


def every_error_class() -> set[type[KhwError]]:
    """Every KhwError subclass the package defines (__main__ is skipped: importing it runs the app)."""
    for module in pkgutil.walk_packages(khwtui.__path__, "khwtui."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, todo = set(), [KhwError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("khwtui.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_error_in_the_package_is_one_kind_and_its_code_follows_from_it() -> None:
    classes = every_error_class()
    assert len(classes) >= 20  # the package's errors were found, not an empty walk
    for cls in classes:
        expected = EXIT_USAGE if issubclass(cls, UserError) else EXIT_FAILED
        assert issubclass(cls, (UserError, OperationError)), cls
        assert cls.exit_code == expected, cls


def test_a_new_error_that_names_no_kind_cannot_be_defined() -> None:
    with pytest.raises(TypeError, match="Forgetful has no kind: derive from UserError"):

        class Forgetful(KhwError):
            pass


def test_a_new_error_cannot_set_its_own_code() -> None:
    with pytest.raises(TypeError, match="Sneaky sets exit_code; its kind decides it"):

        class Sneaky(OperationError):
            exit_code = EXIT_USAGE


def test_the_base_itself_cannot_be_raised() -> None:
    with pytest.raises(TypeError, match="raise a UserError or an OperationError"):
        KhwError("which kind?")


def test_credentials_the_api_refuses_are_the_users_to_fix_though_they_come_from_the_cloud() -> None:
    refused = AccessRefused("403: Compute Engine API has not been used in project p")
    assert isinstance(refused, GceError) and refused.exit_code == EXIT_USAGE


def test_errors_combined_stop_the_run_when_any_of_them_is_the_users() -> None:
    operation, user = OperationError("node a: timed out"), UserError("gcp.project: not set; fix: set it")
    both = combined([operation, user])
    assert isinstance(both, UserError) and str(both) == "node a: timed out\ngcp.project: not set; fix: set it"
    only_work = combined([operation, OperationError("node b: timed out")], GceError)
    assert isinstance(only_work, GceError) and only_work.exit_code == EXIT_FAILED
