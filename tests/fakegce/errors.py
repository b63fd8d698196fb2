"""Compute Engine's error replies, in the JSON shapes the client library parses.

Synchronous errors are Google's standard error body; an accepted operation that fails ends
DONE with `httpErrorStatusCode` and `error.errors` (docs/UPSTREAM.md "The Compute Engine client").
"""

from __future__ import annotations

import zlib
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

    def __init__(self, status: int, message: str, reason: str | None = None, domain: str = "global", extra: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or _REASONS.get(status, "backendError")
        self.domain = domain
        self.extra = extra or {}  # google.rpc.Status fields: "status", "details"

    def body(self) -> dict:
        error = {"message": self.message, "domain": self.domain, "reason": self.reason}
        return {"error": {"code": self.status, "message": self.message, "errors": [error], **self.extra}}


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


# What every call answers when the API cannot be used at all, in Google's error model
# (https://cloud.google.com/apis/design/errors; reasons: https://cloud.google.com/compute/docs/api/handle-errors)
def unauthenticated() -> ApiError:
    """401: expired or revoked credentials (errors[].reason authError, status UNAUTHENTICATED)."""
    message = (
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential."
    )
    return ApiError(401, message, "authError", extra={"status": "UNAUTHENTICATED"})


def service_disabled(project: str) -> ApiError:
    """403: the Compute Engine API is not enabled in the project (reason accessNotConfigured, ErrorInfo SERVICE_DISABLED)."""
    number = str(zlib.crc32(project.encode()))
    message = (
        f"Compute Engine API has not been used in project {number} before or it is disabled. Enable it by visiting "
        f"https://console.developers.google.com/apis/api/compute.googleapis.com/overview?project={number} then retry."
    )
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "SERVICE_DISABLED",
        "domain": "googleapis.com",
        "metadata": {"service": "compute.googleapis.com", "consumer": f"projects/{number}"},
    }
    return ApiError(403, message, "accessNotConfigured", "usageLimits", {"status": "PERMISSION_DENIED", "details": [info]})


def policy_violated(constraint: str, project: str, detail: str) -> ApiError:
    """412 conditionNotMet: an organization policy refuses the request, answered at once. The
    first sentence and the reference link are Compute's shape for every constraint (as a
    refused instance insert shows in GoogleCloudPlatform/solutions-builder docs/TROUBLESHOOTING.md:
    "Error 412: Constraint constraints/compute.requireShieldedVm violated for project
    projects/<id>. ..., conditionNotMet"); `detail` is fakegce's own words."""
    message = (
        f"Constraint constraints/{constraint} violated for project projects/{project}. {detail} See "
        "https://cloud.google.com/resource-manager/docs/organization-policy/org-policy-constraints for more information."
    )
    return ApiError(412, message, "conditionNotMet")


REFUSALS = {"credentials": lambda project: unauthenticated(), "api-disabled": service_disabled}


def internal_error() -> OpError:
    """An operation that ends DONE with GCE's transient "Internal error"; the same call again may succeed."""
    return OpError("INTERNAL_ERROR", "Internal error. Please try again or contact Google Support.", 500)


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
