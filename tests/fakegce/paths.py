"""Resource paths and references: how GCE names a thing, and reads full or partial URLs to it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .catalog import BASE, ZONES, region_of
from .errors import invalid

_URL_PREFIX = re.compile(r"^https?://[^/]+/compute/v1/")
_REF = re.compile(
    r"^projects/(?P<project>[^/]+)/(?P<scope>global|regions/[^/]+|zones/[^/]+)/"
    r"(?P<collection>[A-Za-z]+)/(?P<name>.+)$"
)


@dataclass(frozen=True)
class Scope:
    """Where a resource lives: `global`, `regions/<r>` or `zones/<z>`."""

    kind: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, _, name = text.partition("/")
        return cls(kind, name)

    @property
    def path(self) -> str:
        return self.kind if self.kind == "global" else f"{self.kind}/{self.name}"

    @property
    def region(self) -> str:
        """The region of a regional or zonal scope ("" for global)."""
        if self.kind == "zones":
            return region_of(self.name)
        return self.name if self.kind == "regions" else ""

    def check(self) -> Scope:
        """This scope, if Google has such a region or zone."""
        known = self.kind == "global" or (self.kind == "regions" and self.name in ZONES)
        if not (known or (self.kind == "zones" and region_of(self.name))):
            raise invalid(self.kind.rstrip("s"), self.name, f"Unknown {self.kind.rstrip('s')}.")
        return self


@dataclass(frozen=True)
class Ref:
    """A reference to one resource, read from a full or partial URL."""

    project: str
    scope: Scope
    collection: str
    name: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/{self.scope.path}/{self.collection}/{self.name}"


def url(path: str) -> str:
    """The full URL GCE serves for a resource path (selfLink, targetLink, references)."""
    return BASE + path


def parse_ref(field: str, value: object, project: str, collection: str) -> Ref:
    """Read `value` as a full or partial URL to a resource of `collection`, or refuse it."""
    text = _URL_PREFIX.sub("", value) if isinstance(value, str) else ""
    if text.startswith(("global/", "regions/", "zones/")):
        text = f"projects/{project}/{text}"
    match = _REF.match(text)
    if not match or match["collection"] != collection:
        raise invalid(field, value, "The URL is malformed.")
    return Ref(match["project"], Scope.parse(match["scope"]), collection, match["name"])
