"""The records the fake keeps, and the view of them that resource kinds validate against."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .backing import InstanceBacking
from .errors import OpError
from .paths import Scope

CREATING, READY, DELETING = "CREATING", "READY", "DELETING"


@dataclass
class Record:
    """One stored resource and what the fake needs to know about it beyond its JSON."""

    path: str
    collection: str
    scope: Scope
    body: dict
    uses: tuple[str, ...] = ()  # paths it depends on: they cannot be deleted while it exists
    quota: dict[str, float] = field(default_factory=dict)  # regional quota it consumes
    members: list[str] = field(default_factory=list)  # instance paths (target pools, groups)
    takes_down: tuple[str, ...] = ()  # paths deleted with it (auto-delete disks)
    state: str = CREATING  # invisible while CREATING; gone once its delete op is DONE
    ready_at: float = math.inf
    host_keys: dict[str, str] | None = None  # instances: published in guest attributes

    @property
    def name(self) -> str:
        return self.body["name"]


@dataclass
class Prepared:
    """A validated insert: the records to create and what finishes them."""

    record: Record
    parts: list[Record] = field(default_factory=list)  # created alongside (boot disk)
    work: Callable[[], object] | None = None  # slow part, run off the request thread
    finish: Callable[[Record, object], None] | None = None  # applies work's result when DONE


Change = Callable[[Record], OpError | None]  # an action's effect, applied when its op is DONE


class View(Protocol):
    """What resource kinds may ask of the store while validating a request."""

    project: str
    backing: InstanceBacking

    def use(self, field: str, value: object, collection: str) -> Record:
        """The READY resource `value` refers to; 400/404 otherwise."""

    def records(self, collection: str) -> list[Record]:
        """Every record of a collection, in any state."""

    def users(self, path: str) -> list[Record]:
        """The records that use `path` (and so keep it from being deleted)."""

    def new_id(self) -> str: ...

    def allocate_external_ip(self) -> str: ...
