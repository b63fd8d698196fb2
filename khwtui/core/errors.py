"""Errors that end a run with a documented exit code.

Every error is one of two kinds, and its kind alone decides the code: a `UserError` is something
only the user can fix (config, flags, credentials, state; exit 2, the run stops at once), an
`OperationError` is something that went wrong while doing the work (a node, the cloud, a download;
exit 1, it fails the stage it happened in). A new error class names its kind by its base; one that
names neither, or sets its own code, is refused when it is defined, so no class can end a run
with a code it forgot to set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNVERIFIED = 3
EXIT_INTERRUPTED = 130


class KhwError(Exception):
    """An error shown to the user as one line; `exit_code` is what the process returns.
    Raised only as a `UserError` or an `OperationError` (or a subclass of one)."""

    exit_code: ClassVar[int]
    _KINDS: ClassVar[tuple[str, ...]] = ("UserError", "OperationError")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__ and cls.__name__ in KhwError._KINDS:
            return
        if "exit_code" in vars(cls):
            raise TypeError(f"{cls.__qualname__} sets exit_code; its kind decides it: derive from UserError or OperationError")
        if not hasattr(cls, "exit_code"):
            raise TypeError(f"{cls.__qualname__} has no kind: derive from UserError (exit 2) or OperationError (exit 1)")

    def __new__(cls, *args: Any, **kwargs: Any) -> KhwError:
        if not hasattr(cls, "exit_code"):
            raise TypeError("KhwError has no kind: raise a UserError or an OperationError")
        return super().__new__(cls, *args, **kwargs)


class UserError(KhwError):
    """Only the user can fix it (config, flags, credentials, state folder): the run stops, exit 2."""

    exit_code = EXIT_USAGE


class OperationError(KhwError):
    """The work itself went wrong (a node, the cloud, a download): its stage fails, exit 1."""

    exit_code = EXIT_FAILED


def combined(errors: Sequence[KhwError], operation: type[OperationError] = OperationError) -> KhwError:
    """Several errors as one, a line each; the user's kind wins (a run that cannot go on stops),
    else it is an `operation` error (a caller's own kind, so its handlers still catch it)."""
    kind = UserError if any(isinstance(e, UserError) for e in errors) else operation
    return kind("\n".join(str(e) for e in errors))


class ConfigError(UserError):
    """A bad config value: names the key path, what is wrong and the fix, in one line."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{key}: {problem}; fix: {fix}")


class StateError(UserError):
    """The state folder is unusable (locked, newer schema, corrupt)."""


class UsageError(UserError):
    """Bad command-line usage."""


class StageFailed(OperationError):
    """A stage could not make the node as wanted; carries the node and its last output lines."""

    def __init__(self, message: str, host: str = "", lines: tuple[str, ...] = ()) -> None:
        self.host, self.lines = host, lines  # the same names as remote.CommandFailed
        super().__init__(message)
