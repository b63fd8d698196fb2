"""The Kubernetes API from Python: HTTPS with the cluster CA and a client certificate, JSON in and out.

Every stage that talks to an API server goes through `ApiClient`, so TLS, errors and the
"unverified" rule live in one place (docs/ARCHITECTURE.md "Passed, failed, unverified"): whether a group or resource is
served is decided from the server's discovery documents (/api, /apis, /apis/<group>/<version>),
never from a bare 404. A 404 for an object is normal before the first apply, so `get` returns
None for it; 401, 403, 5xx and an unreachable server raise ApiError, which fails a check.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from khwtui.core.errors import OperationError, UserError

TIMEOUT = 10.0
SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


class ApiError(OperationError):
    """The API server refused, failed or could not be reached; `status` is 0 when nothing answered."""

    def __init__(self, method: str, url: str, status: int, message: str) -> None:
        self.status = status
        what = f"{status} {http.client.responses.get(status, '')}".rstrip() if status else "not reached"
        super().__init__(f"{method} {url}: {what}: {message}")


class KubeconfigError(UserError):
    """A kubeconfig this client cannot use: names the file and what is missing."""


@dataclass(frozen=True)
class Credentials:
    """Where the API is and who we are: the server URL, the CA that signed its certificate, and a
    client certificate and key (both None: anonymous). `tls_server_name` is the name the server
    certificate is checked for when the URL's host is not in it (kubeconfig `tls-server-name`)."""

    server: str
    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    tls_server_name: str | None = None

    def __repr__(self) -> str:  # never show the key
        return f"Credentials(server={self.server!r}, client_cert={self.cert_pem is not None})"


def credentials_from_kubeconfig(text: str, where: str = "kubeconfig", context: str | None = None) -> Credentials:
    """The credentials of `context` (default: current-context) of a kubeconfig with embedded data."""
    try:
        doc = yaml.safe_load(text)
        name = context or doc["current-context"]
        ctx = _named(doc, "contexts", name)["context"]
        cluster = _named(doc, "clusters", ctx["cluster"])["cluster"]
        user = _named(doc, "users", ctx["user"])["user"]
        return Credentials(
            server=cluster["server"],
            ca_pem=base64.b64decode(cluster["certificate-authority-data"], validate=True),
            cert_pem=base64.b64decode(user["client-certificate-data"], validate=True),
            key_pem=base64.b64decode(user["client-key-data"], validate=True),
            tls_server_name=cluster.get("tls-server-name"),
        )
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        detail = exc.args[0] if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise KubeconfigError(f"{where}: not a usable kubeconfig (missing or bad {detail}); fix: run `khwtui up --until kubeconfigs` to write it again") from None


def _named(doc: dict, section: str, name: str) -> dict:
    for entry in doc.get(section) or ():
        if entry.get("name") == name:
            return entry
    raise KeyError(f"{section} entry {name!r}")


def tls_context(creds: Credentials) -> ssl.SSLContext:
    """Verifies the server against the cluster CA (never the system store) and presents the client
    certificate. ssl loads a key only from a file: it exists for the call, 0600 in a 0700 folder."""
    context = ssl.create_default_context(cadata=creds.ca_pem.decode("ascii"))
    if creds.cert_pem is not None and creds.key_pem is not None:
        with tempfile.TemporaryDirectory(prefix="khwtui-tls-") as folder:
            cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
            for path, data in ((cert, creds.cert_pem), (key, creds.key_pem)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                    out.write(data)
            context.load_cert_chain(cert, key)
    return context


class _Connection(http.client.HTTPSConnection):
    """HTTPS that checks the server certificate for `server_name` instead of the host it dials."""

    def __init__(self, host: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


class ApiClient:
    """JSON requests to one API server. Blocking I/O runs in a worker thread, so callers await."""

    def __init__(self, creds: Credentials, timeout: float = TIMEOUT) -> None:
        parts = urlsplit(creds.server)
        if parts.scheme != "https" or not parts.hostname:
            raise KubeconfigError(f"API server {creds.server!r} is not an https URL")
        self.server = creds.server.rstrip("/")
        self._host, self._port = parts.hostname, parts.port or 443
        self._server_name = creds.tls_server_name or parts.hostname
        self._context = tls_context(creds)
        self._timeout = timeout

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str | None = None) -> ApiClient:
        try:
            text = path.read_text()
        except OSError as exc:
            raise KubeconfigError(f"{path}: {exc.strerror}; fix: run `khwtui up --until kubeconfigs`") from None
        return cls(credentials_from_kubeconfig(text, str(path), context))

    # --- requests -----------------------------------------------------------------------------

    async def get(self, path: str, *, absent_ok: bool = True) -> dict | str | None:
        """The object at `path`, or None when the server says it does not exist (404). Where absence
        is itself wrong (discovery, /version), `absent_ok=False` makes a 404 an ApiError too."""
        status, body = await self._request("GET", path, None, absent_is_error=not absent_ok)
        return None if status == 404 else body

    async def post(self, path: str, body: dict) -> dict | str:
        return (await self._request("POST", path, body, absent_is_error=True))[1]

    async def put(self, path: str, body: dict) -> dict | str:
        return (await self._request("PUT", path, body, absent_is_error=True))[1]

    async def post_object(self, path: str, body: dict) -> dict:
        """POST whose answer must be an object (what was created, a review); any other is an ApiError."""
        return self.json_object("POST", path, await self.post(path, body))

    def json_object(self, method: str, path: str, body: dict | str | None) -> dict:
        """`body` when the server answered `method path` with a JSON object; else an ApiError quoting it."""
        if not isinstance(body, dict):
            raise ApiError(method, self.server + path, 200, f"not a JSON object: {str(body)[:80]}")
        return body

    async def _request(self, method: str, path: str, body: dict | None, absent_is_error: bool = False) -> tuple[int, dict | str]:
        status, data = await asyncio.to_thread(self._send, method, path, body)
        if status >= 400 and (status != 404 or absent_is_error):
            raise ApiError(method, self.server + path, status, _message(data))
        return status, data

    def _send(self, method: str, path: str, body: dict | None) -> tuple[int, dict | str]:
        connection = _Connection(self._host, self._port, self._server_name, self._context, self._timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", **({"Content-Type": "application/json"} if payload else {})}
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(method, self.server + path, 0, _reason(exc)) from None
        finally:
            connection.close()
        text = raw.decode("utf-8", "replace")
        if response.getheader("Content-Type", "").startswith("application/json"):
            try:
                return response.status, json.loads(text)
            except ValueError:
                pass
        return response.status, text

    # --- discovery and identity -----------------------------------------------------------------

    async def unserved(self, group_version: str, resource: str) -> str | None:
        """None when the server advertises `resource` in `group_version` ("v1" is the core group);
        otherwise why not, quoted from its discovery documents."""
        if "/" in group_version:
            groups = await self._discovery("/apis")
            offered = [v.get("groupVersion", "") for g in groups.get("groups", []) for v in g.get("versions", [])]
            listing = f"/apis/{group_version}"
        else:
            offered = list((await self._discovery("/api")).get("versions", []))
            listing = f"/api/{group_version}"
        if group_version not in offered:
            return f"the API server does not serve {group_version} (its discovery lists {', '.join(offered) or 'nothing'})"
        names = [r.get("name") for r in (await self._discovery(listing)).get("resources", [])]
        if resource not in names:
            return f"the API server serves {group_version} without {resource} (its discovery lists {', '.join(map(str, names)) or 'nothing'})"
        return None

    async def _discovery(self, path: str) -> dict:
        """A discovery document; a server that advertises it must serve it, so a 404 here is an error."""
        return self.json_object("GET", path, await self.get(path, absent_ok=False))

    async def who_am_i(self) -> tuple[str, list[str]]:
        """(user, groups) the server authenticated us as: a SelfSubjectReview (authentication.k8s.io/v1)."""
        review = await self.post_object(SELF_SUBJECT_REVIEWS, {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        try:
            info = review["status"]["userInfo"]
            return info["username"], list(info.get("groups", []))
        except (KeyError, TypeError):
            raise ApiError("POST", self.server + SELF_SUBJECT_REVIEWS, 201, f"no status.userInfo in the answer: {str(review)[:120]}") from None


def _message(body: dict | str) -> str:
    """The Status message of a Kubernetes error body, else the start of the text."""
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or body)
    return body.strip().splitlines()[0][:200] if body.strip() else "(empty body)"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message}"
    if isinstance(exc, ssl.SSLEOFError):
        return "the connection closed during the TLS handshake"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
