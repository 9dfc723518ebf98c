"""A real HTTP server on 127.0.0.1 for tests that fetch media by URL.

It runs in a background thread, so sync tests, async tests and a separate server process
under test (end-to-end) can all reach it. Routes misbehave on request: status sequences,
redirects, slow and trickling bodies, bodies too large to hold in memory. Every request is
counted per path, and the most requests in flight at once is recorded, so tests can assert
what actually reached the server.
"""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

# A status, or a status with extra headers: 503, (429, {"Retry-After": "0"}).
Status = int | tuple[int, dict[str, str]]


@dataclass
class _Route:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    statuses: list[Status] = field(default_factory=lambda: [200])
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before answering
    size: int | None = None  # lazily generated body of this many bytes instead of `body`
    content_length: bool = True  # False: chunked transfer encoding
    trickle_bps: int | None = None  # send this many bytes per second


class ImageServer:
    """`with ImageServer() as server: server.route("/a.png", png); fetch(server.url("/a.png"))`

    With `tls` (a server-side SSLContext) it speaks https instead.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._routes: dict[str, _Route] = {}
        self._counts: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._max_in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ImageServer:
        handler = type("Handler", (_Handler,), {"image_server": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        if self._tls is not None:
            # The handshake happens on first read, in the handler thread, not in accept().
            self._httpd.socket = self._tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes trickling and delayed handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start the server first"
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}{path}"

    # -- routes ------------------------------------------------------------------------------

    def route(
        self,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/octet-stream",
        statuses: Sequence[Status] = (200,),
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """A static body. `statuses` are answered in turn, the last one repeating: [503, 200]
        fails once and then serves `body`. Non-2xx answers carry a short text body."""
        self._add(
            path,
            _Route(body, content_type, list(statuses), dict(headers or {}), delay_s=delay_s),
        )

    def redirect(self, path: str, location: str, *, status: int = 302) -> None:
        self._add(path, _Route(statuses=[(status, {"Location": location})]))

    def large(self, path: str, size: int, *, content_length: bool = True) -> None:
        """`size` bytes made on the fly; without Content-Length they go out chunked."""
        self._add(path, _Route(size=size, content_length=content_length))

    def trickle(self, path: str, size: int, *, bytes_per_second: int = 1) -> None:
        """A body of `size` bytes (Content-Length sent up front) at `bytes_per_second`."""
        self._add(path, _Route(size=size, trickle_bps=bytes_per_second))

    def count(self, path: str) -> int:
        """Requests that reached `path`, whatever the answer."""
        with self._lock:
            return self._counts[path]

    def hits(self, prefix: str) -> int:
        """Requests that reached any path starting with `prefix`."""
        with self._lock:
            return sum(n for path, n in self._counts.items() if path.startswith(prefix))

    def max_in_flight(self, path: str) -> int:
        with self._lock:
            return self._max_in_flight[path]

    def _add(self, path: str, route: _Route) -> None:
        with self._lock:
            self._routes[path] = route

    # -- used by the handler -----------------------------------------------------------------

    def _begin(self, path: str) -> tuple[_Route | None, Status]:
        with self._lock:
            self._counts[path] += 1
            self._in_flight[path] += 1
            self._max_in_flight[path] = max(self._max_in_flight[path], self._in_flight[path])
            route = self._routes.get(path)
            if route is None:
                return None, 404
            nth = self._counts[path] - 1
            return route, route.statuses[min(nth, len(route.statuses) - 1)]

    def _end(self, path: str) -> None:
        with self._lock:
            self._in_flight[path] -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up or rejects our certificate is what tests provoke


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    image_server: ImageServer  # set on the per-server subclass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        server = self.image_server
        route, status = server._begin(path)
        try:
            self._answer(route, status)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client gave up, which is often the point of the test
        finally:
            server._end(path)
        self.close_connection = True

    def _answer(self, route: _Route | None, status: Status) -> None:
        code, extra = status if isinstance(status, tuple) else (status, {})
        if route is not None and route.delay_s:
            self.image_server._stopping.wait(route.delay_s)
        if route is None or not 200 <= code < 300:
            self._send(code, extra, b"not served\n", "text/plain")
            return
        if route.size is None:
            self._send(code, {**route.headers, **extra}, route.body, route.content_type)
            return
        self.send_response(code)
        self.send_header("Content-Type", route.content_type)
        if route.content_length:
            self.send_header("Content-Length", str(route.size))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in self._generate(route):
            if route.content_length:
                self.wfile.write(chunk)
            else:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        if not route.content_length:
            self.wfile.write(b"0\r\n\r\n")

    def _generate(self, route: _Route) -> Iterator[bytes]:
        left = route.size or 0
        step = route.trickle_bps or 64 * 1024
        while left > 0 and not self.image_server._stopping.is_set():
            chunk = b"x" * min(step, left)
            left -= len(chunk)
            yield chunk
            if route.trickle_bps and left:
                self.image_server._stopping.wait(1.0)

    def _send(self, code: int, headers: dict[str, str], body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean
