"""GCE's field rules shared by every resource kind: names, labels, numbers, addresses, metadata."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable

from .errors import ApiError, invalid, required

NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_METADATA_KEY = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_PORTS = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
METADATA_LIMIT = 512 * 1024


def need(body: dict, key: str, prefix: str = "resource") -> object:
    """The value of a required field; an empty string or list counts as missing."""
    value = body.get(key)
    if value in (None, "", [], {}):
        raise required(f"{prefix}.{key}")
    return value


def check_name(value: object, field: str = "resource.name") -> str:
    """A resource name: RFC 1035, lowercase, at most 63 characters."""
    if not isinstance(value, str) or not value:
        raise required(field)
    if not NAME.fullmatch(value):
        raise invalid(field, value, f"Must be a match of regex '(?:{NAME.pattern})'")
    return value


def check_labels(labels: object, field: str = "resource.labels") -> dict[str, str]:
    """Labels: lowercase keys starting with a letter, lowercase values, at most 64 pairs."""
    labels = labels or {}
    if not isinstance(labels, dict) or len(labels) > 64:
        raise invalid(field, labels, "Labels must be a map of at most 64 entries.")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key) or not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            raise invalid(
                f"{field}.{key}", value, "Label keys and values must be lowercase letters, digits, '_' or '-'."
            )
    return labels


def integer(field: str, value: object, low: int, high: int) -> int:
    """An integer field (int64 fields arrive as JSON strings) within [low, high]."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise invalid(field, value, "Must be an integer.") from None
    if not low <= number <= high:
        raise invalid(field, value, f"Must be between {low} and {high}.")
    return number


def one_of(field: str, value: object, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise invalid(field, value, f"Must be one of {', '.join(allowed)}.")
    return str(value)


def ipv4(field: str, value: object) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)  # type: ignore[arg-type]
    except ValueError:
        raise invalid(field, value, "Must be an IPv4 address.") from None


def cidr(field: str, value: object, *, strict: bool = True) -> ipaddress.IPv4Network:
    """An IPv4 range; `strict` also refuses host bits set (as subnet and route ranges do)."""
    try:
        return ipaddress.IPv4Network(value, strict=strict)  # type: ignore[arg-type]
    except ValueError:
        raise invalid(field, value, "Must be an IPv4 CIDR range with no host bits set.") from None


def check_ports(field: str, ports: object) -> list[str]:
    """Ports or port ranges ("22", "30000-32767") of a firewall rule or forwarding rule."""
    if not isinstance(ports, list):
        raise invalid(field, ports, "Must be a list of ports.")
    for i, port in enumerate(ports):
        match = _PORTS.fullmatch(str(port))
        low, high = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
        if not 0 < low <= high <= 65535:
            raise invalid(f"{field}[{i}]", port, "Must be a port or a port range between 1 and 65535.")
    return [str(p) for p in ports]


def fingerprint(*parts: object) -> str:
    """An opaque fingerprint that changes whenever `parts` change."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def metadata_items(items: object, field: str = "resource.metadata.items") -> list[dict[str, str]]:
    """Metadata entries: unique keys of [a-zA-Z0-9_-], string values, 512 KiB in all."""
    items = items or []
    if not isinstance(items, list):
        raise invalid(field, items, "Must be a list.")
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = item.get("key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise invalid(f"{field}[{i}].key", key, "Must match [a-zA-Z0-9_-]{1,128}.")
        if key in seen:
            raise invalid(f"{field}[{i}].key", key, "Duplicate metadata key.")
        seen.add(key)
    if sum(len(i["key"]) + len(str(i.get("value", ""))) for i in items) > METADATA_LIMIT:
        raise ApiError(400, "Metadata exceeds the 512 KiB limit.")
    return [{"key": i["key"], "value": str(i.get("value", ""))} for i in items]


def probe_timing(body: dict) -> dict[str, int]:
    """Health-check timing shared by legacy and regional health checks, with GCE's defaults."""
    timing = {
        "checkIntervalSec": integer("resource.checkIntervalSec", body.get("checkIntervalSec", 5), 1, 300),
        "timeoutSec": integer("resource.timeoutSec", body.get("timeoutSec", 5), 1, 300),
        "healthyThreshold": integer("resource.healthyThreshold", body.get("healthyThreshold", 2), 1, 10),
        "unhealthyThreshold": integer("resource.unhealthyThreshold", body.get("unhealthyThreshold", 2), 1, 10),
    }
    if timing["timeoutSec"] > timing["checkIntervalSec"]:
        raise invalid("resource.timeoutSec", timing["timeoutSec"], "Timeout must not exceed the check interval.")
    return timing
