"""uvicorn's httptools protocol with bounds on the request head: its size, its header count, and
the time it may take to arrive.

httptools (llhttp) accepts a head of any size, buffering a header value until its line ends,
and uvicorn sets no limit of its own nor a deadline for a head to arrive: one client could make
the server buffer gigabytes, or hold connections open forever by sending a byte now and then
(slowloris). The bounds must be enforced while the head is being parsed, before the ASGI app
sees anything, so this subclass counts in the parser callbacks (`on_url`, `on_header`) and in
`data_received` (for a header line still incomplete), and refuses with the one error JSON shape:

- 431 when the head is over `max_bytes` or has more than `max_headers` fields (414 when the
  request target alone is);
- 408 when a head that has begun is not complete within `timeout_s` (a connection that sent
  nothing by then is closed without an answer: there is no request to answer).

It also answers a few requests itself (`Shortcut`s: the liveness probe), as soon as their
message is parsed, without starting a task for the ASGI app: such an answer does not wait
behind the work already queued on the event loop (under 32 streams, one chunk per stream per
engine step), which is what a probe under load waited for.

A refused connection is answered, half-closed, and closed after a short linger, so that a
client still sending its head reads the answer rather than a connection reset. What httptools
cannot parse at all (uvicorn's plain-text 400) is answered the same way, in the error shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr

from nimctl.errors import (
    BadRequestError,
    HeaderFieldsTooLargeError,
    NimError,
    RequestTimeoutError,
    UriTooLongError,
)
from nimctl.observability import request_id

logger = logging.getLogger("nimctl.http")

# 64 KiB for the request line and all headers: four times Node's and h11's 16 KiB default, so
# large cookies and bearer tokens (JWTs of several KiB) pass, while one connection's head
# costs at most this much memory. nginx allows 32 KiB (4 x 8k), Apache 8 KiB per line.
MAX_HEAD_BYTES = 64 * 2**10
# Apache's LimitRequestFields default; real clients send about 10.
MAX_HEADERS = 100
# How long a refused connection keeps reading (and dropping) what the client still sends, and
# how much, before it is closed: enough for the client to finish writing and read the answer.
LINGER_S = 2.0
LINGER_BYTES = 1 * 2**20


@dataclass(frozen=True)
class HeadLimits:
    """The bounds on one request head; `timeout_s` is NIM_REQUEST_HEADER_TIMEOUT."""

    max_bytes: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS
    timeout_s: float = 20.0


@dataclass(frozen=True)
class ShortAnswer:
    """A 200 given by a shortcut: its headers (content type and request id among them; the
    protocol adds uvicorn's `date` and `server`, and the length) and its body."""

    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    request_id: str  # on the access-log line, as on the app's answers


class Shortcut(typing.Protocol):
    """A GET of one exact request target that the protocol answers itself."""

    @property
    def target(self) -> bytes: ...

    def answer(self, headers: Sequence[tuple[bytes, bytes]]) -> ShortAnswer | None:
        """The answer to a request with these headers; None: the app answers it instead."""
        ...


def bounded_protocol(
    limits: HeadLimits, shortcuts: Sequence[Shortcut] = ()
) -> type[asyncio.Protocol]:
    """The protocol class to hand to `uvicorn.Config(http=...)`, bound to `limits`, answering
    `shortcuts` itself."""

    class Protocol(BoundedHttpToolsProtocol):
        LIMITS = limits
        SHORTCUTS = {shortcut.target: shortcut for shortcut in shortcuts}

    return Protocol


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol refusing heads that are too large, too many, or too slow."""

    LIMITS: ClassVar[HeadLimits] = HeadLimits()
    SHORTCUTS: ClassVar[Mapping[bytes, Shortcut]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # of the head being parsed, counted by the parser's callbacks
        self._head_fields = 0
        self._raw_bytes = 0  # received since the last head or body ended
        self._in_head = True  # not inside a body: what arrives now is (a) head
        self._head_begun = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._dropped = 0
        self._short: ShortAnswer | None = None  # the message being parsed is a shortcut's

    # --- connection ---------------------------------------------------------------------------

    # Narrower than asyncio.Protocol's BaseTransport, as uvicorn's own: a stream's is a Transport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a head is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        if self._in_head:
            self._raw_bytes += len(data)
        super().data_received(data)
        # A header line not yet complete sits in the parser's buffer, unseen by on_header.
        if self._in_head and not self._refused and self._raw_bytes > self.LIMITS.max_bytes:
            self._refuse(self._too_large())

    # --- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._refused:
            return
        self._head_bytes = self._head_fields = 0
        self._head_begun = True
        self._arm_head_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        self._head_bytes += len(url)
        if self._head_bytes > self.LIMITS.max_bytes:
            self._refuse(
                UriTooLongError(
                    f"The request target is longer than {self.LIMITS.max_bytes:,} bytes."
                )
            )
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        self._head_fields += 1
        if self._head_fields > self.LIMITS.max_headers:
            self._refuse(
                HeaderFieldsTooLargeError(
                    f"The request has more than {self.LIMITS.max_headers} header fields."
                )
            )
            return
        if self._head_bytes > self.LIMITS.max_bytes:
            self._refuse(self._too_large())
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._disarm_head_timer()
        self._in_head = self._head_begun = False
        self._raw_bytes = 0
        self._short = self._shortcut_answer()
        if self._short is None:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused and self._short is None:  # a shortcut's GET body is not read
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_head = True
        self._raw_bytes = 0
        if self._short is not None:
            answer, self._short = self._short, None
            self._send_short(answer)
            return
        super().on_message_complete()

    # --- shortcuts ----------------------------------------------------------------------------

    def _shortcut_answer(self) -> ShortAnswer | None:
        shortcut = self.SHORTCUTS.get(self.url)
        if (
            shortcut is None
            or self.parser.get_method() != b"GET"
            or self.parser.should_upgrade()
            # Pipelined behind an answer still being sent: the app answers it, in order.
            or (self.cycle is not None and not self.cycle.response_complete)
        ):
            return None
        return shortcut.answer(self.headers)

    def _send_short(self, answer: ShortAnswer) -> None:
        """Write the answer as uvicorn's cycle would (status line, default headers, keep-alive),
        log it as uvicorn does, and go on to the connection's next request."""
        version = self.parser.get_http_version()
        keep_alive = version != "1.0" and self.parser.should_keep_alive()
        head = [b"HTTP/1.1 200 OK\r\n"]
        for name, value in (*self.server_state.default_headers, *answer.headers):
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-length: %d\r\n" % len(answer.body))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        self.transport.write(b"".join(head) + b"\r\n" + answer.body)
        if self.access_log:
            token = request_id.set(answer.request_id)
            try:
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(self.scope),
                    "GET",
                    self.url.decode("latin-1"),
                    version,
                    200,
                )
            finally:
                request_id.reset(token)
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # counts it; kept alive: arms the timer, reads on

    # --- refusing -----------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what httptools cannot parse, in the one error shape."""
        self._refuse(BadRequestError(f"{msg} The request line or headers are malformed."))

    def _too_large(self) -> HeaderFieldsTooLargeError:
        return HeaderFieldsTooLargeError(
            f"The request line and headers are larger than {self.LIMITS.max_bytes:,} bytes."
        )

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.LIMITS.timeout_s, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._refused:
            return
        if not self._head_begun:
            self.transport.close()  # nothing was asked; there is nothing to answer
            return
        self._refuse(
            RequestTimeoutError(
                f"The request line and headers did not arrive within {self.LIMITS.timeout_s:g} "
                "s (NIM_REQUEST_HEADER_TIMEOUT)."
            )
        )

    def _refuse(self, error: NimError) -> None:
        """Answer `error` and close; what else arrives is dropped, never parsed."""
        self._refused = True
        self._disarm_head_timer()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"
        logger.warning("refused a request from %s: %d %s", client, error.status, error.message)
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head went wrong while the answer before it is being sent: that
            # answer ends the connection instead.
            self.cycle.keep_alive = False
            return
        body = json.dumps(error.body()).encode()
        head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n".encode()]
        # uvicorn's `server` and `date` headers, as on every other answer
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
