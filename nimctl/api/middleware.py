"""Pure ASGI middleware: request ids, HTTP metrics and in-flight tracking, API key, body bounds.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which would wrap every streamed chunk in
an extra task and queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from nimctl.errors import (
    AuthenticationError,
    NimError,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from nimctl.keys import KeyRing
from nimctl.metrics import NimctlMetrics
from nimctl.observability import key_name, request_id

if TYPE_CHECKING:
    from nimctl.tracing import Tracing

logger = logging.getLogger("nimctl.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes open without the API key (probes and scrapers carry no credentials).
OPEN_PATHS = frozenset({"/v1/health/live", "/v1/health/ready", "/v1/metrics", "/metrics"})
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Where the API-key middleware leaves the name of the key a request came with, for the metrics
# middleware outside it (the scope is the one object both see).
KEY_NAME_SCOPE = "nimctl.key_name"


async def send_error(
    send: Send, error: NimError, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((k.encode(), v.encode()) for k, v in error.headers().items()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id if it is sane, else a new one (what every answer carries)."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _CLIENT_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Take the client's X-Request-Id (if sane) or make one; return it; log lines carry it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope["headers"])
        token = request_id.set(rid)
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class TracingMiddleware:
    """The server span of each request, current while the app answers (streams included), so
    that the routes' spans are its children. Installed only with NIM_ENABLE_OTEL=1. Probes and
    scrapes (every few seconds, from the kubelet and Prometheus) are not traced: noise."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        span = self.tracing.server_span(method, scope["headers"])
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            with self.tracing.current(span):
                await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.set_attributes(
                {
                    "http.request.method": method,
                    "url.path": scope["path"],
                    "http.response.status_code": status,
                    "nimctl.request_id": request_id.get() or "",
                }
            )
            if status >= 500:
                span.set_status(self.tracing.error_status(f"HTTP {status}"))
            span.end()


class Inflight:
    """Requests being answered, so that a graceful stop knows when it may end."""

    def __init__(self) -> None:
        self.count = 0


class HttpMetricsMiddleware:
    """Count every answer by route template, method and status; track requests in flight."""

    def __init__(self, app: ASGIApp, metrics: NimctlMetrics, inflight: Inflight) -> None:
        self.app = app
        self.metrics = metrics
        self.inflight = inflight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.inflight.count += 1
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.inflight.count -= 1
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            name = scope.get(KEY_NAME_SCOPE, "")
            self.metrics.http_requests.labels(template, scope["method"], str(status), name).inc()
            self.metrics.http_seconds.labels(template).observe(time.perf_counter() - start)


def bearer_token(authorization: bytes) -> bytes:
    """The token of `Authorization: Bearer <token>` (scheme case-insensitive); else b""."""
    scheme, _, token = authorization.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


class ApiKeyMiddleware:
    """With API keys configured, everything but health and metrics needs `Authorization: Bearer`.

    Which keys are valid is the key ring's business (it re-reads the key file); this only asks.
    """

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        matched = self.keys.match(bearer_token(given)) if given else None
        if matched is None:
            message = (
                "Missing API key: send it as 'Authorization: Bearer <key>'."
                if not given
                else "Invalid API key."
            )
            await send_error(
                send,
                AuthenticationError(message),
                [(b"www-authenticate", b'Bearer realm="nimctl"')],
            )
            return
        if not matched:
            await self.app(scope, receive, send)
            return
        scope[KEY_NAME_SCOPE] = matched
        token = key_name.set(matched)
        try:
            await self.app(scope, receive, send)
        finally:
            key_name.reset(token)


class _BodyDeadline:
    """One timer per request for the whole body, armed at its first `receive()`.

    `asyncio.timeout_at` around every receive cost ~11 us each on this CPU; one loop timer costs
    less, and routes that never read a body (probes, model list) arm none. When the timer fires
    while a receive is pending, that receive is cancelled and turned into TimeoutError; when it
    fires between receives, the next one raises at once.
    """

    __slots__ = ("_deadline", "_handle", "_waiter", "expired")

    def __init__(self, timeout_s: float) -> None:
        self._deadline = asyncio.get_running_loop().time() + timeout_s
        self._handle: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Task[Any] | None = None
        self.expired = False

    def _expire(self) -> None:
        self._handle = None
        self.expired = True
        if self._waiter is not None:
            self._waiter.cancel()

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._deadline = float("inf")  # a body read to its end is never refused later

    async def wait(self, receive: Receive) -> Message:
        if self._handle is None and not self.expired:
            loop = asyncio.get_running_loop()
            if loop.time() >= self._deadline:
                self.expired = True
            elif self._deadline != float("inf"):
                self._handle = loop.call_at(self._deadline, self._expire)
        if self.expired:
            raise TimeoutError
        task = asyncio.current_task()
        self._waiter = task
        try:
            return await receive()
        except asyncio.CancelledError:
            if self.expired and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._waiter = None


class BodyLimitMiddleware:
    """Bound request bodies in size and time, for every route that reads one.

    Size: over NIM_MAX_REQUEST_BYTES is refused (413) by Content-Length before reading, or as
    soon as a chunked body passes the cap. Time: a body not complete within
    NIM_REQUEST_BODY_TIMEOUT of the request's start is refused (408, connection closed), so
    that a client announcing more than it sends holds nothing open.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def _error(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"The request body is larger than {self.max_bytes:,} bytes (NIM_MAX_REQUEST_BYTES). "
            "Send less, e.g. images by URL instead of base64."
        )

    def _timeout(self, received: int, announced: bytes | None) -> RequestTimeoutError:
        of = f" of {announced.decode('latin-1')}" if announced else ""
        return RequestTimeoutError(
            f"The request body did not arrive within {self.timeout_s:g} s "
            f"(NIM_REQUEST_BODY_TIMEOUT): {received:,}{of} bytes came."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await send_error(send, self._error())
                    return
                announced = value
                break
        deadline = _BodyDeadline(self.timeout_s)
        received = 0
        complete = False

        async def bounded() -> Message:
            nonlocal received, complete
            if complete:  # later calls wait for a disconnect, for as long as a stream runs
                return await receive()
            try:
                message = await deadline.wait(receive)
            except TimeoutError:
                error = self._timeout(received, announced)
                logger.info("answering 408: %s", error.message)
                raise error from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    deadline.disarm()
                    raise self._error()
                complete = not message.get("more_body", False)
            else:
                complete = True
            if complete:
                deadline.disarm()
            return message

        try:
            await self.app(scope, bounded, send)
        finally:
            deadline.disarm()
