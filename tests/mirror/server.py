"""A read-only HTTP server for the test mirror, bound to one chosen address, that counts requests.

Tests bind it to 127.0.0.1 or to the bridge's host address so the nodes (and nothing else) reach
it; the hit counts let tests assert what was fetched, and how often.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socketserver
import threading
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

from . import MirrorError


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.count(path)
        target = self.server.resolve(path)
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        size = target.stat().st_size
        start = self._range_start(size)
        if start:
            with self.server.lock:
                self.server.resumed.append((path, start))
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        if body:
            with target.open("rb") as f:
                f.seek(start)
                shutil.copyfileobj(f, self.wfile)

    def _range_start(self, size: int) -> int:
        """The N of a "Range: bytes=N-" request inside the file (what a resumed download sends); else 0."""
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "").strip())
        return int(match.group(1)) if match and 0 < int(match.group(1)) < size else 0

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the hit counts are the record."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, address: tuple[str, int]) -> None:
        self.root = root.resolve()
        self.hits: Counter[str] = Counter()
        self.resumed: list[tuple[str, int]] = []  # (path, first byte) of each ranged GET answered
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse lookup of the address (no DNS traffic from tests)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def count(self, path: str) -> None:
        with self.lock:
            self.hits[path] += 1

    def resolve(self, path: str) -> Path | None:
        """The regular file under root that `path` names, or None (missing, a folder, or outside root)."""
        try:
            target = (self.root / path.lstrip("/")).resolve()
        except (OSError, ValueError):  # e.g. an embedded NUL
            return None
        return target if target.is_relative_to(self.root) and target.is_file() else None


def _check_host(host: str) -> None:
    """One concrete IPv4 address: never 0.0.0.0, which would expose the mirror beyond the tests."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if not isinstance(address, ipaddress.IPv4Address) or address.is_unspecified:
        raise MirrorError(f"MirrorServer host {host!r} is not one IPv4 address; give e.g. 127.0.0.1 or the bridge's 10.240.0.1")


class MirrorServer:
    """`with MirrorServer(root, host) as mirror:` serves `root` at `mirror.url` until the block ends."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        _check_host(host)
        self._root, self._address = root, (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MirrorServer:
        self._server = _Server(self._root, self._address)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mirror-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def url(self) -> str:
        """The base URL, e.g. http://10.240.0.1:41234 (no trailing slash)."""
        assert self._server is not None, "the server runs only inside its with-block"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def hits(self) -> Counter[str]:
        """Requests so far per URL path (404s included), a snapshot."""
        assert self._server is not None, "the server runs only inside its with-block"
        with self._server.lock:
            return Counter(self._server.hits)

    @property
    def resumed(self) -> list[tuple[str, int]]:
        """(URL path, first byte) of every ranged GET answered with 206 so far, a snapshot."""
        assert self._server is not None, "the server runs only inside its with-block"
        with self._server.lock:
            return list(self._server.resumed)
