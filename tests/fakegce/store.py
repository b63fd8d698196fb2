"""The fake's state: resources and their lifecycle through operations, references, quotas.

Every mutating call is validated at once (GCE's synchronous 4xx), then starts an operation;
its effect is applied only when the operation is DONE. Until then an inserted resource is
invisible (but its name is taken), and a resource being deleted still shows.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from . import catalog, kinds, kinds_power
from .backing import GeneratedBacking, InstanceBacking
from .errors import OpError, already_exists, in_use, not_found, not_ready, required
from .model import CREATING, DELETING, READY, Change, Record
from .operations import Operations, OpSpan
from .paths import Scope, parse_ref
from .rules import check_name
from .specs import SPECS

# shared by every fake of the process (next() is atomic under the GIL); FAKEGCE_LOOPBACK_BLOCK gives
# each of several processes at once (pytest-xdist workers) its own 127.N.0.0/16
_EXTERNAL_IPS = itertools.count(2 + 65536 * int(os.environ.get("FAKEGCE_LOOPBACK_BLOCK", "0")))


class Store:
    def __init__(
        self,
        *,
        project: str,
        op_latency: float,
        wait_cap: float,
        quotas: dict[str, float] | None,
        backing: InstanceBacking | None,
        hostkey_delay: float,
    ) -> None:
        self.project = project
        self.quotas = {**catalog.DEFAULT_QUOTAS, **(quotas or {})}
        self.backing = backing or GeneratedBacking(self.allocate_external_ip)
        self._wait_cap = wait_cap
        self._hostkey_delay = hostkey_delay
        self._changed = threading.Condition(threading.RLock())
        self._records: dict[str, Record] = {}
        self._ops = Operations(project, op_latency, self._notify)
        self._ids = itertools.count(1)
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fakegce-backing")
        self._stopping = False

    # -- the View the resource kinds validate against (called with the lock held) --

    def use(self, field: str, value: object, collection: str) -> Record:
        if value in (None, ""):
            raise required(field)
        path = parse_ref(field, value, self.project, collection).path
        record = self._records.get(path)
        if record is None:
            raise not_found(path)
        if record.state != READY:
            raise not_ready(path)
        return record

    def records(self, collection: str) -> list[Record]:
        return [r for r in self._records.values() if r.collection == collection]

    def users(self, path: str) -> list[Record]:
        return [r for r in self._records.values() if path in r.uses]

    def new_id(self) -> str:
        return str(5 * 10**18 + next(self._ids))

    def allocate_external_ip(self) -> str:
        """The next loopback address no reserved address holds: 127.0.0.2, 127.0.0.3, ... counted
        across every fake of the process, so fakes alive at once (each perhaps with a data plane
        listening on its forwarding rules' addresses) never hand out the same address."""
        with self._changed:
            taken = {r.body["address"] for r in self.records("addresses")}
            while True:
                n = next(_EXTERNAL_IPS)
                ip = f"127.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
                if n % 256 not in (0, 255) and ip not in taken:
                    return ip

    # -- mutations: each returns the operation it started (or, for a repeated requestId, the first one) --

    def insert(self, collection: str, scope: Scope, body: dict, request_id: str | None, fail: OpError | None) -> dict:
        return self._once(request_id, lambda: self._insert(collection, scope, body, request_id, fail))

    def delete(self, collection: str, scope: Scope, name: str, request_id: str | None, fail: OpError | None) -> dict:
        return self._once(request_id, lambda: self._delete(collection, scope, name, request_id, fail))

    def act(
        self,
        collection: str,
        scope: Scope,
        name: str,
        verb: str,
        body: dict,
        request_id: str | None,
        fail: OpError | None,
    ) -> dict:
        """A custom method (setMetadata, addInstance, addInstances) on an existing resource."""
        if (collection, verb) in kinds_power.POWER:
            return self._once(request_id, lambda: self._power(self._existing(collection, scope, name), verb, request_id, fail))
        return self._once(
            request_id, lambda: self._act(self._existing(collection, scope, name), verb, body, request_id, fail)
        )

    def _power(self, record: Record, verb: str, request_id: str | None, fail: OpError | None) -> dict:
        """instances.stop / instances.start: the backing powers the machine while the op runs."""
        if fail:
            return self._started(record, verb, request_id, error=fail)
        work, finish = kinds_power.POWER[(record.collection, verb)](self, record)
        future = self._executor.submit(work) if work else None
        return self._started(record, verb, request_id, work=future, finish=partial(self._powered, record, finish))

    def _powered(self, record: Record, finish: Callable[[Record, object], None], outcome: object) -> OpError | None:
        if isinstance(outcome, OpError):
            return outcome
        finish(record, outcome)
        return None

    # -- reads --

    def visible(self, collection: str, scope: Scope | None = None) -> list[dict]:
        """The READY (or being deleted) resources of a collection, as a read serves them."""
        with self._changed:
            self._tick()
            shown = [r for r in self.records(collection) if r.state != CREATING and scope in (None, r.scope)]
            return [kinds.render(r, self.users(r.path)) for r in sorted(shown, key=lambda r: r.path)]

    def get(self, collection: str, scope: Scope, name: str) -> dict:
        with self._changed:
            record = self._shown(collection, scope, name)
            return kinds.render(record, self.users(record.path))

    def members(self, collection: str, scope: Scope, name: str) -> list[dict]:
        """The instances of a target pool or instance group (joined once their add op was DONE),
        as a read serves them: an instance being deleted shows as STOPPING until it is gone."""
        with self._changed:
            record = self._shown(collection, scope, name)
            return [kinds.render(self._records[p], self.users(p)) for p in record.members]

    def host_keys(self, scope: Scope, name: str) -> dict[str, str] | None:
        """An instance's published host keys, once the guest agent would have written them."""
        with self._changed:
            record = self._shown("instances", scope, name)
            return record.host_keys if time.monotonic() >= record.ready_at + self._hostkey_delay else None

    def metadata(self, name: str) -> dict[str, str]:
        """The metadata items of the instance `name` by key, as the metadata server serves them to
        the instance itself: from the moment its insert is accepted (its guest reads them while it boots)."""
        with self._changed:
            found = [r for r in self.records("instances") if r.name == name]
            if len(found) != 1:
                raise KeyError(f"{len(found)} instances are named {name!r}")
            return {item["key"]: item["value"] for item in found[0].body["metadata"]["items"]}

    def usage(self, region: str) -> dict[str, float]:
        """Quota in use, counting resources still being created: a region's metrics in `region`,
        the project's (catalog.PROJECT_METRICS) in every region."""
        with self._changed:
            self._tick()
            used = dict.fromkeys(self.quotas, 0.0)
            for record in self._records.values():
                for metric, amount in record.quota.items():
                    if metric in catalog.PROJECT_METRICS or record.scope.region == region:
                        used[metric] = used.get(metric, 0.0) + amount
            return used

    def operation(self, scope: Scope, name: str) -> dict:
        with self._changed:
            self._tick()
            return self._ops.get(scope, name).to_json(time.monotonic())

    def wait(self, scope: Scope, name: str) -> dict:
        """operations.wait: block until DONE, or return early after the wait cap."""
        deadline = time.monotonic() + self._wait_cap
        with self._changed:
            while True:
                self._tick()
                op, now = self._ops.get(scope, name), time.monotonic()
                if op.done or now >= deadline or self._stopping:
                    return op.to_json(now)
                self._changed.wait(min(deadline, op.ends if op.ends > now else deadline) - now)

    def max_in_flight(self, kind: str) -> int:
        with self._changed:
            return self._ops.max_in_flight(kind)

    def operation_seconds(self) -> list[tuple[str, float]]:
        with self._changed:
            self._tick()
            return self._ops.durations()

    def operation_spans(self) -> list[OpSpan]:
        with self._changed:
            self._tick()
            return self._ops.spans()

    def stop(self) -> None:
        """Release blocked waits and finish the backing's work."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- internals (lock held) --

    def _once(self, request_id: str | None, start: Callable[[], dict]) -> dict:
        """Start an operation, unless this requestId already did: then answer with that one."""
        with self._changed:
            self._tick()
            if replayed := self._ops.replay(request_id):
                return replayed.to_json(time.monotonic())
            return start()

    def _insert(self, collection: str, scope: Scope, body: dict, request_id: str | None, fail: OpError | None) -> dict:
        check_name(body.get("name"))
        prepared = kinds.INSERTS[collection](self, scope, body)
        for record in (prepared.record, *prepared.parts):
            if record.path in self._records:
                raise already_exists(record.path)
        main = prepared.record
        fail = fail or self._over_quota(scope, main.quota)
        if fail:
            return self._started(main, "insert", request_id, error=fail)
        created = [main, *prepared.parts]
        self._records.update((r.path, r) for r in created)
        work = self._executor.submit(prepared.work) if prepared.work else None
        finish = partial(self._created, created, prepared.finish)
        return self._started(main, "insert", request_id, work=work, finish=finish)

    def _delete(self, collection: str, scope: Scope, name: str, request_id: str | None, fail: OpError | None) -> dict:
        record = self._existing(collection, scope, name)
        if users := self.users(record.path):
            raise in_use(SPECS[collection].noun, record.path, users[0].path)
        if fail:
            return self._started(record, "delete", request_id, error=fail)
        going = [record, *(self._records[p] for p in record.takes_down)]
        for r in going:
            r.state = DELETING
        teardown = kinds.TEARDOWNS.get(collection)
        work = self._executor.submit(teardown(self, record)) if teardown else None
        return self._started(record, "delete", request_id, work=work, finish=partial(self._deleted, going))

    def _act(self, record: Record, verb: str, body: dict, request_id: str | None, fail: OpError | None) -> dict:
        change = kinds.ACTIONS[(record.collection, verb)](self, record, body)
        finish = None if fail else partial(self._changed_by, record, change)
        return self._started(record, verb, request_id, error=fail, finish=finish)

    def _started(self, record: Record, verb: str, request_id: str | None, **how: object) -> dict:
        """Start operation `verb` on `record`; `how` holds its error, or its work and finish."""
        op = self._ops.start(
            record.scope, f"{record.collection}.{verb}", record.path, record.body["id"], request_id, **how
        )  # type: ignore[arg-type]
        return op.to_json(time.monotonic())

    def _tick(self) -> None:
        for op in self._ops.completable(time.monotonic()):
            op.complete()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _path(self, collection: str, scope: Scope, name: str) -> str:
        return f"projects/{self.project}/{scope.path}/{collection}/{name}"

    def _shown(self, collection: str, scope: Scope, name: str) -> Record:
        """A resource a read may see: READY, or being deleted."""
        self._tick()
        path = self._path(collection, scope, name)
        record = self._records.get(path)
        if record is None or record.state == CREATING:
            raise not_found(path)
        return record

    def _existing(self, collection: str, scope: Scope, name: str) -> Record:
        """The resource a delete or action targets: it must exist and be READY."""
        record = self._shown(collection, scope, name)
        if record.state == DELETING:
            raise not_ready(record.path)
        return record

    def _over_quota(self, scope: Scope, needed: dict[str, float]) -> OpError | None:
        used = self.usage(scope.region)
        for metric, amount in needed.items():
            limit = self.quotas[metric]
            if amount and used.get(metric, 0.0) + amount > limit:
                where = "globally" if metric in catalog.PROJECT_METRICS else f"in region {scope.region}"
                return OpError("QUOTA_EXCEEDED", f"Quota '{metric}' exceeded.  Limit: {limit:.1f} {where}.", 403)
        return None

    def _created(
        self, records: list[Record], finish: Callable[[Record, object], None] | None, outcome: object
    ) -> OpError | None:
        if isinstance(outcome, OpError):
            for record in records:
                del self._records[record.path]
            return outcome
        now = time.monotonic()
        for record in records:
            record.state, record.ready_at = READY, now
        if finish:
            finish(records[0], outcome)
        return None

    def _deleted(self, records: list[Record], outcome: object) -> OpError | None:
        if isinstance(outcome, OpError):
            for record in records:
                record.state = READY
            return outcome
        for record in records:
            del self._records[record.path]
            for other in self._records.values():
                if record.path in other.members:
                    other.members.remove(record.path)
        return None

    def _changed_by(self, record: Record, change: Change, outcome: object) -> OpError | None:
        if self._records.get(record.path) is not record:
            return OpError("RESOURCE_NOT_FOUND", f"The resource '{record.path}' was deleted.", 404)
        return change(record)
