"""instances.stop and instances.start, with the Compute API v1 reference's semantics.

stop "shuts the instance down cleanly"; a stopped instance is TERMINATED and its VM time is no
longer billed, while its persistent disks and static addresses are. An ephemeral external
address is released on stop, and start gives the instance a new one (a static natIP stays).
Stopping a TERMINATED instance, or starting a RUNNING one, succeeds and changes nothing. The
backing powers the machine off and on while the operation runs.
"""

from __future__ import annotations

from collections.abc import Callable

from .model import Record, View

Work = Callable[[], object] | None
Finish = Callable[[Record, object], None]


def stop(view: View, record: Record) -> tuple[Work, Finish]:
    if record.body["status"] == "TERMINATED":
        return None, _unchanged
    record.body["status"] = "STOPPING"
    return (lambda: view.backing.stop(record.name)), _stopped(view)


def start(view: View, record: Record) -> tuple[Work, Finish]:
    if record.body["status"] == "RUNNING":
        return None, _unchanged
    record.body["status"] = "STAGING"
    return (lambda: view.backing.start(record.name)), _started


def _unchanged(record: Record, outcome: object) -> None:
    """Nothing to do: already in the state asked for."""


def _stopped(view: View) -> Finish:
    static = {r.body["address"] for r in view.records("addresses")}

    def finish(record: Record, outcome: object) -> None:
        record.body["status"] = "TERMINATED"
        for config in record.body["networkInterfaces"][0].get("accessConfigs", []):
            if config.get("natIP") not in static:
                config.pop("natIP", None)  # an ephemeral address goes back to the pool

    return finish


def _started(record: Record, outcome: object) -> None:
    record.body["status"] = "RUNNING"
    for config in record.body["networkInterfaces"][0].get("accessConfigs", []):
        config.setdefault("natIP", outcome)  # a new ephemeral address, as the backing reports it


POWER = {("instances", "stop"): stop, ("instances", "start"): start}
