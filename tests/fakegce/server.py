"""FakeCompute: the fake Compute Engine API on 127.0.0.1, with recording and fault injection."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

from .api import Api, Call
from .backing import InstanceBacking
from .errors import REFUSALS, ApiError, OpError, ReplyLost
from .faults import Faults, LostReply
from .operations import OpSpan
from .paths import parse_ref
from .store import Store


@dataclass(frozen=True)
class Recorded:
    """One request the fake received, and the status it answered with."""

    method: str
    path: str
    query: dict[str, str]
    body: dict | None
    status: int
    lost_reply: bool = False  # carried out, but answered with a 503 (lose_reply_rate, lose_replies)
    received: float = 0.0  # time.monotonic() when the request came in
    answered: float = 0.0  # and when its answer was ready


class FakeCompute:
    """A strict local Compute Engine REST API; use as a context manager.

    op_latency: seconds an operation takes from start to DONE (PENDING for its first fifth).
    fault_rate: share of requests answered 429 or 503 before anything happens (seeded).
    lose_reply_rate: share of mutating calls carried out whose reply is replaced by a 503.
    quotas: regional limits by metric (CPUS, INSTANCES, IN_USE_ADDRESSES, STATIC_ADDRESSES).
    backing: brings up the machine behind each instance (default: GeneratedBacking).
    wait_cap: longest an operations `wait` call blocks before answering a running op.
    hostkey_delay: seconds after an instance's insert completes before its host keys are published.
    project_metadata: the project's commonInstanceMetadata (e.g. {"enable-oslogin": "TRUE"}).
    op_fail_rate: share of accepted mutating calls whose operation ends DONE with GCE's transient
        "Internal error. Please try again" (500, INTERNAL_ERROR) and no effect (seeded).
    refuse: answer every request as GCE does when the API cannot be used: "credentials" (401)
        or "api-disabled" (403 accessNotConfigured / SERVICE_DISABLED).
    org_policies: the organization policy constraints enforced on the project; fakegce knows
        "compute.requireOsLogin" (an instance insert or setMetadata with enable-oslogin=FALSE is
        answered 412 conditionNotMet, naming the constraint).
    """

    def __init__(
        self,
        *,
        project: str = "p1",
        op_latency: float = 0.0,
        fault_rate: float = 0.0,
        seed: int = 0,
        lose_reply_rate: float = 0.0,
        quotas: dict[str, float] | None = None,
        backing: InstanceBacking | None = None,
        wait_cap: float = 1.0,
        hostkey_delay: float = 0.0,
        project_metadata: dict[str, str] | None = None,
        op_fail_rate: float = 0.0,
        refuse: str | None = None,
        org_policies: set[str] | None = None,
    ) -> None:
        self._store = Store(
            project=project,
            op_latency=op_latency,
            wait_cap=wait_cap,
            quotas=quotas,
            backing=backing,
            hostkey_delay=hostkey_delay,
        )
        self.requests: list[Recorded] = []
        self._api = Api(self._store, project_metadata or {}, frozenset(org_policies or ()))
        self._faults = Faults(rate=fault_rate, lose_rate=lose_reply_rate, seed=seed, op_fail_rate=op_fail_rate)
        self._refusal = REFUSALS[refuse](project) if refuse else None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    def __enter__(self) -> FakeCompute:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        serve = partial(self._server.serve_forever, poll_interval=0.02)  # quick shutdown
        self._thread = threading.Thread(target=serve, name="fakegce", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server and self._thread
        self._server.shutdown()
        self._store.stop()
        self._server.server_close()
        self._thread.join()

    @property
    def backing(self) -> InstanceBacking:
        return self._store.backing

    def resources(self, collection: str) -> list[dict]:
        """The READY (or being deleted) resources of a collection, e.g. "instances", "disks"."""
        return self._store.visible(collection)

    def group_members(self, group: str) -> list[dict]:
        """The instances of the instance group at `group` (a full or partial URL, as a backend
        names it), as reads serve them: what listInstances lists."""
        ref = parse_ref("group", group, self._store.project, "instanceGroups")
        return self._store.members(ref.collection, ref.scope, ref.name)

    def max_in_flight(self, kind: str = "instances.insert") -> int:
        """The most operations of `kind` ("<collection>.<verb>") ever running at once."""
        return self._store.max_in_flight(kind)

    def operation_seconds(self) -> list[tuple[str, float]]:
        """(kind, seconds from start to DONE) of every finished operation, e.g. ("instances.insert", 2.0)."""
        return self._store.operation_seconds()

    def operation_spans(self) -> list[OpSpan]:
        """Every operation that is DONE, with when it started and ended (time.monotonic(), as
        Recorded's times), in start order: what a test or benchmark orders requests against."""
        return self._store.operation_spans()

    def instance_metadata(self, name: str) -> dict[str, str]:
        """What the metadata server tells instance `name` about itself (its metadata items by key),
        from the moment its insert is accepted: a backing reads ssh-keys here, as a guest agent would."""
        return self._store.metadata(name)

    def inject(self, method: str, path_regex: str, status: int, times: int = 1) -> None:
        """Answer the next `times` matching requests with `status` and GCE's body for it."""
        self._faults.queue(method, path_regex, status, times)

    def lose_replies(self, method: str, path_regex: str, times: int = 1) -> None:
        """Carry out the next `times` matching mutating calls, then answer each with a 503."""
        self._faults.queue(method, path_regex, LostReply(), times)

    def inject_op_error(
        self, method: str, path_regex: str, code: str, message: str, status: int = 400, times: int = 1
    ) -> None:
        """Let the next `times` matching mutating calls be accepted, then end DONE with this error."""
        self._faults.queue(method, path_regex, OpError(code, message, status), times)

    def _handle(self, method: str, target: str, raw_body: bytes) -> tuple[int, dict]:
        """Answer one request: faults first, then the API; record it either way."""
        received = time.monotonic()
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        body: dict | None = None
        lost = False
        try:
            body = _json(raw_body)
            status, reply = 200, self._answer(method, parts.path, query, body or {})
        except ApiError as error:
            status, reply, lost = error.status, error.body(), isinstance(error, ReplyLost)
        except Exception as bug:  # noqa: BLE001 - a fault in the fake itself: make it loud, not a dropped connection
            status, reply = 500, ApiError(500, f"fakegce failed: {bug!r}").body()
        with self._lock:
            self.requests.append(Recorded(method, parts.path, query, body, status, lost, received, time.monotonic()))
        return status, reply

    def _answer(self, method: str, path: str, query: dict[str, str], body: dict) -> dict:
        if self._refusal:
            raise self._refusal
        if fault := self._faults.before(method, path):
            raise fault
        route, params = self._api.route(method, path)
        fail = self._faults.op_error(method, path) if route.mutating else None
        reply = self._api.call(route, Call(params, query, body, fail))
        if route.mutating and self._faults.lose_reply(method, path):
            raise ReplyLost()
        return reply


def _json(raw: bytes) -> dict | None:
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "Invalid JSON payload received.", "parseError") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received: the body must be an object.", "parseError")
    return body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stall

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        status, reply = self.server.fake._handle(self.command, self.path, self.rfile.read(length))  # type: ignore[attr-defined]
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read `FakeCompute.requests` instead."""
