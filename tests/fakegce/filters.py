"""The `filter` parameter of list and aggregatedList, in its simple forms.

Supported: comparisons `FIELD = VALUE` and `FIELD != VALUE`, where FIELD is `name`, `status`
or `labels.KEY` and VALUE is bare or quoted; several comparisons, each optionally in
parentheses, optionally joined by AND, must all hold. `=` is exact equality. Anything else
(OR, `:`, `eq`, regular expressions, other fields) is refused with a 400 so a test never
silently gets an unfiltered list.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import invalid

Predicate = Callable[[dict], bool]

_COMPARISON = re.compile(
    r"\s*(?P<open>\(?)\s*(?P<field>name|status|labels\.[a-z][a-z0-9_-]*)\s*(?P<op>!=|=)\s*"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s()\"']+)\s*(?P<close>\)?)\s*(?P<join>AND\b)?"
)


def parse(text: str | None) -> Predicate:
    """A predicate over served resource bodies for one filter expression."""
    checks: list[Predicate] = []
    position, text, joined = 0, (text or "").strip(), False
    while position < len(text):
        match = _COMPARISON.match(text, position)
        if not match or bool(match["open"]) != bool(match["close"]):
            raise invalid("filter", text, "Invalid list filter expression.")
        checks.append(_comparison(match["field"], match["op"], match["value"].strip("\"'")))
        position, joined = match.end(), bool(match["join"])
    if joined:
        raise invalid("filter", text, "Invalid list filter expression.")
    return lambda body: all(check(body) for check in checks)


def _comparison(field: str, op: str, value: str) -> Predicate:
    def actual(body: dict) -> object:
        if field.startswith("labels."):
            return (body.get("labels") or {}).get(field.removeprefix("labels."))
        return body.get(field)

    if op == "=":
        return lambda body: actual(body) == value
    return lambda body: actual(body) != value
