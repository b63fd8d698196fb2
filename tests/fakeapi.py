"""A fake Kubernetes API server for checks that need a real cluster: HTTPS on 127.0.0.1 (its own
CA), answering with documents built from the API's documented shapes, recording every write.

The checks under test talk to it through the real khwtui.transport.kubeapi.ApiClient, so TLS, JSON,
discovery and the 404-is-absent rule are exercised exactly as against a real apiserver. Builders
for the documents (discovery, Deployments, Pods, ...) live beside it so tests read as the cluster
state they describe.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from khwtui.transport.kubeapi import ApiClient, Credentials

Answer = tuple[int, "dict | str"]


def not_found(path: str) -> Answer:
    return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                 "message": f"the server could not find the requested resource ({path})"}


class FakeApi:
    """GET answers come from `docs` (full path with query, else the path alone, else 404). POST and
    PUT are recorded; unless an `on_post` hook answers, the object is stored (so a later GET finds
    it, as on a real server) and echoed back with the server's fields filled in."""

    def __init__(self) -> None:
        self.docs: dict[str, Answer] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.on_post: dict[str, Callable[[dict], Answer]] = {}
        self._ca_pem, cert_pem, key_pem = _certificates()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as folder:
            cert, key = Path(folder, "c.pem"), Path(folder, "k.pem")
            cert.write_bytes(cert_pem)
            key.write_bytes(key_pem)
            context.load_cert_chain(cert, key)
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def client(self) -> ApiClient:
        return ApiClient(Credentials(self.url, self._ca_pem))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what the server holds -----------------------------------------------------------------

    def serve(self, path: str, body: dict | str, status: int = 200) -> None:
        self.docs[path] = (status, body)

    def hold(self, obj: dict, path: str) -> None:
        """An object as the server returns it: the manifest's fields plus the server's bookkeeping."""
        meta = {**obj["metadata"], "resourceVersion": "1", "uid": f"uid-{obj['metadata'].get('name', 'x')}"}
        self.serve(path, {**obj, "metadata": meta})

    def discovery(self, served: dict[str, list[str]]) -> None:
        """/api, /api/v1, /apis and /apis/<group>/<version> listing exactly `served` ({groupVersion: resources})."""
        self.serve("/api", {"kind": "APIVersions", "versions": ["v1"]})
        self.serve("/api/v1", _resource_list("v1", served.get("v1", [])))
        groups = [gv for gv in served if "/" in gv]
        self.serve("/apis", {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
             "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}} for gv in groups]})
        for gv in groups:
            self.serve(f"/apis/{gv}", _resource_list(gv, served[gv]))

    def writes(self, method: str) -> list[tuple[str, dict]]:
        return [(path, body or {}) for m, path, body in self.requests if m == method]

    # --- answering ---------------------------------------------------------------------------------

    def answer(self, method: str, path: str, body: dict | None) -> Answer:
        self.requests.append((method, path, body))
        if method == "GET":
            return self.docs.get(path) or self.docs.get(urlsplit(path).path) or not_found(path)
        hook = self.on_post.get(path) if method == "POST" else None
        if hook is not None:
            return hook(body or {})
        echoed = dict(body or {})
        meta = dict(echoed.get("metadata", {}))
        meta.setdefault("name", meta.get("generateName", "object-") + "x7k2p")
        echoed["metadata"] = {**meta, "resourceVersion": "2"}
        self.serve(f"{path}/{meta['name']}" if method == "POST" else path, echoed)
        return (201 if method == "POST" else 200), echoed


class _Server(ThreadingHTTPServer):
    def get_request(self) -> tuple[socket.socket, tuple]:
        """TCP_NODELAY: without it each answer waits ~40 ms for a delayed ACK."""
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


class NodePortServer:
    """What a NodePort answers on a worker (nginx, or the demo app): 200 to HEAD and GET /, on the
    worker's loopback test address."""

    def __init__(self, address: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self.do_HEAD()

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _resource_list(group_version: str, resources: list[str]) -> dict:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [{"name": r, "namespaced": True, "kind": r.title(), "verbs": ["get", "list", "create", "update"]} for r in resources]}


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = api.answer(method, self.path, body)
            data = (json.dumps(answer) if isinstance(answer, dict) else answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if isinstance(answer, dict) else "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply("GET")

        def do_POST(self) -> None:
            self._reply("POST")

        def do_PUT(self) -> None:
            self._reply("PUT")

    return Handler


def _certificates() -> tuple[bytes, bytes, bytes]:
    """(CA PEM, server certificate PEM for 127.0.0.1, server key PEM)."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-apiserver-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca.public_bytes(pem), cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


# --- documents, in the shapes the API returns ------------------------------------------------------


def deployment(namespace: str, name: str, labels: dict[str, str], replicas: int, ready: int) -> dict:
    status = {"replicas": replicas, "updatedReplicas": replicas, **({"readyReplicas": ready, "availableReplicas": ready} if ready else {})}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}}, "status": status}


def pod(namespace: str, name: str, labels: dict[str, str], node: str = "worker-0", *, phase: str = "Running",
        ready: bool = True, state: dict | None = None, last: dict | None = None, restarts: int = 0, container: str = "main") -> dict:
    container_status = {"name": container, "ready": ready, "restartCount": restarts,
                        "state": state or ({"running": {"startedAt": "2026-01-01T00:00:00Z"}} if phase == "Running" else {}),
                        "lastState": {"terminated": last} if last else {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [container_status]}}


def pod_list(*pods: dict) -> dict:
    return {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": list(pods)}


def crash_looping(restarts: int, exit_code: int = 1) -> dict:
    """The container states of a pod in CrashLoopBackOff (as `kubectl get pod -o json` shows them)."""
    return {"state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
            "last": {"exitCode": exit_code, "reason": "Error", "finishedAt": "2026-01-01T00:05:00Z"}, "restarts": restarts}
