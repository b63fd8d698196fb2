"""Errors that end a run with a documented exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNVERIFIED = 3
EXIT_INTERRUPTED = 130


class KhwError(Exception):
    """An error shown to the user as one line; `exit_code` is what the process returns."""

    exit_code = EXIT_USAGE


class ConfigError(KhwError):
    """A bad config value: names the key path, what is wrong and the fix, in one line."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{key}: {problem}; fix: {fix}")


class StateError(KhwError):
    """The state folder is unusable (locked, newer schema, corrupt)."""


class UsageError(KhwError):
    """Bad command-line usage."""


class StageFailed(KhwError):
    """A stage could not make the node as wanted; carries the node and its last output lines."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, host: str = "", lines: tuple[str, ...] = ()) -> None:
        self.host, self.lines = host, lines  # the same names as remote.CommandFailed
        super().__init__(message)
