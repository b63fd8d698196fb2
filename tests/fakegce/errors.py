"""Compute Engine's error replies, in the JSON shapes the client library parses.

Synchronous errors are Google's standard error body; an accepted operation that fails ends
DONE with `httpErrorStatusCode` and `error.errors` (reference/gcp-and-ssh.md §2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

_REASONS = {
    400: "invalid",
    403: "forbidden",
    404: "notFound",
    409: "alreadyExists",
    412: "conditionNotMet",
    429: "rateLimitExceeded",
    500: "backendError",
    503: "backendError",
}


class ApiError(Exception):
    """A request refused before anything happened: an HTTP status and its JSON body."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or _REASONS.get(status, "backendError")

    def body(self) -> dict:
        error = {"message": self.message, "domain": "global", "reason": self.reason}
        return {"error": {"code": self.status, "message": self.message, "errors": [error]}}


@dataclass(frozen=True)
class OpError:
    """Why an accepted operation ended DONE with an error instead of its effect."""

    code: str
    message: str
    status: int = 400

    def fields(self) -> dict:
        return {
            "httpErrorStatusCode": self.status,
            "httpErrorMessage": HTTPStatus(self.status).phrase.upper(),
            "error": {"errors": [{"code": self.code, "message": self.message}]},
        }


def not_found(path: str) -> ApiError:
    return ApiError(404, f"The resource '{path}' was not found")


def already_exists(path: str) -> ApiError:
    return ApiError(409, f"The resource '{path}' already exists")


def required(field: str) -> ApiError:
    return ApiError(400, f"Required field '{field}' not specified", "required")


def invalid(field: str, value: object, why: str) -> ApiError:
    return ApiError(400, f"Invalid value for field '{field}': '{value}'. {why}")


def not_ready(path: str) -> ApiError:
    return ApiError(400, f"The resource '{path}' is not ready", "resourceNotReady")


def in_use(noun: str, path: str, user: str) -> ApiError:
    message = f"The {noun} resource '{path}' is already being used by '{user}'"
    return ApiError(400, message, "resourceInUseByAnotherResource")


def fingerprint_mismatch() -> ApiError:
    return ApiError(412, "Supplied fingerprint does not match current metadata fingerprint.")


def guest_attribute_missing(query_path: str) -> ApiError:
    return ApiError(404, f"The resource '{query_path}' of type 'Guest Attribute' was not found.")


class ReplyLost(ApiError):
    """A 503 sent instead of the reply of a mutating call that was carried out."""

    def __init__(self) -> None:
        super().__init__(503, "The service is currently unavailable.")


def for_status(status: int, path: str) -> ApiError:
    """The reply GCE gives with this status, for faults injected on `path`."""
    if status == 404:
        return not_found(path)
    if status == 409:
        return already_exists(path)
    if status == 429:
        return ApiError(429, "Rate Limit Exceeded")
    if status == 503:
        return ApiError(503, "The service is currently unavailable.")
    return ApiError(status, HTTPStatus(status).phrase)
