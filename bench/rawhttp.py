"""A minimal HTTP/1.1 keep-alive client on raw sockets, for timing a server and not a client.

Why not httpx or aiohttp: their per-request CPU (pure-Python h11, header objects, decoders)
would be paid on the same two cores as the servers under test, and httpx writes a request's
headers and body in separate sends, which lets the *client's* Nagle/delayed-ACK timing into the
measurement. Here a request is pre-encoded once and written with one `sendall` on a socket with
TCP_NODELAY; the response is parsed just enough (status, Content-Length or chunked framing, and
for event streams the first event carrying content) and every step is time-stamped as its bytes
arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass


def encode_request(
    method: str,
    path: str,
    port: int,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> bytes:
    """One request, head and body in one buffer, keep-alive (HTTP/1.1's default)."""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: */*"]
    if body is not None:
        head += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def chat_body(
    prompt: str | list[dict[str, object]],
    max_tokens: int,
    stream: bool,
    model: str,
    ignore_eos: bool = True,
) -> bytes:
    """A chat request: greedy (the same tokens on every server), a fixed output length."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": ignore_eos,
        "stream": stream,
    }
    return json.dumps(body).encode()


@dataclass
class Exchange:
    """One request/response on a kept-alive connection; times are time.perf_counter()."""

    status: int
    body: bytes
    sent: float  # just before the request was written
    head: float  # status line and headers complete
    first_body: float | None  # first byte of the body's payload
    first_content: float | None  # event streams: first event whose delta has content
    end: float  # the response complete

    def ms(self, at: float | None) -> float:
        return ((at if at is not None else self.end) - self.sent) * 1000


class ResponseReader:
    """Incremental response parser: feed it bytes as they arrive, with their arrival time."""

    def __init__(self, sse: bool = False) -> None:
        self.sse = sse
        self.done = False
        self._buffer = bytearray()
        self._state = "head"
        self._chunked = False
        self._remaining = 0
        self._events = bytearray()
        self._body = bytearray()
        self.status = 0
        self.head: float | None = None
        self.first_body: float | None = None
        self.first_content: float | None = None
        self.end: float | None = None

    def feed(self, data: bytes, now: float) -> None:
        self._buffer += data
        while not self.done:
            if self._state == "head":
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._parse_head(bytes(self._buffer[:end]), now)
                del self._buffer[: end + 4]
            elif self._state == "length":
                take = min(self._remaining, len(self._buffer))
                if take:
                    self._payload(bytes(self._buffer[:take]), now)
                    del self._buffer[:take]
                    self._remaining -= take
                if self._remaining == 0:
                    self._finish(now)
                return
            elif self._state == "size":
                line_end = self._buffer.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(self._buffer[:line_end]).split(b";")[0], 16)
                del self._buffer[: line_end + 2]
                self._remaining = size
                self._state = "chunk" if size else "trailer"
            elif self._state == "chunk":
                if len(self._buffer) < self._remaining + 2:
                    return
                self._payload(bytes(self._buffer[: self._remaining]), now)
                del self._buffer[: self._remaining + 2]
                self._state = "size"
            elif self._state == "trailer":
                line_end = self._buffer.find(b"\r\n")
                if line_end < 0:
                    return
                del self._buffer[: line_end + 2]
                if line_end == 0:
                    self._finish(now)

    def _parse_head(self, head: bytes, now: float) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        self.head = now
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
        if self._chunked:
            self._state = "size"
        else:
            self._state = "length"
            self._remaining = length or 0

    def _payload(self, data: bytes, now: float) -> None:
        if not data:
            return
        if self.first_body is None:
            self.first_body = now
        self._body += data
        if self.sse and self.first_content is None:
            self._events += data
            while self.first_content is None:
                end = self._events.find(b"\n\n")
                if end < 0:
                    break
                event = bytes(self._events[:end])
                del self._events[: end + 2]
                if event.startswith(b"data: {") and _has_content(event[6:]):
                    self.first_content = now

    def _finish(self, now: float) -> None:
        self.end = now
        self.done = True

    def result(self, sent: float) -> Exchange:
        assert self.head is not None and self.end is not None
        return Exchange(
            self.status,
            bytes(self._body),
            sent,
            self.head,
            self.first_body,
            self.first_content,
            self.end,
        )


def _has_content(data: bytes) -> bool:
    try:
        choices = json.loads(data).get("choices") or []
    except ValueError:
        return False
    return any((c.get("delta") or {}).get("content") for c in choices)


class Connection:
    """One blocking keep-alive connection; requests strictly one after the other."""

    def __init__(self, port: int, timeout: float = 300.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def exchange(self, request: bytes, sse: bool = False) -> Exchange:
        reader = ResponseReader(sse)
        sent = time.perf_counter()
        self.sock.sendall(request)
        while not reader.done:
            data = self.sock.recv(1 << 18)
            now = time.perf_counter()
            if not data:
                raise ConnectionError("the server closed the connection")
            reader.feed(data, now)
        return reader.result(sent)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncConnection:
    """The same on asyncio, for concurrent load from one client process."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> AsyncConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def exchange(self, request: bytes, sse: bool = False) -> Exchange:
        parser = ResponseReader(sse)
        sent = time.perf_counter()
        self._writer.write(request)
        if len(request) > 1 << 16:
            await self._writer.drain()
        while not parser.done:
            data = await self._reader.read(1 << 18)
            now = time.perf_counter()
            if not data:
                raise ConnectionError("the server closed the connection")
            parser.feed(data, now)
        return parser.result(sent)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def closed_loop(
    port: int, requests: list[bytes], concurrency: int, sse: bool, deadline_s: float = 600.0
) -> tuple[list[Exchange], float]:
    """Send `requests` over `concurrency` kept-alive connections, each taking the next request
    as soon as its last one is answered; returns the exchanges and the wall time taken."""
    queue = list(reversed(requests))
    done: list[Exchange] = []
    connections = [await AsyncConnection.open(port) for _ in range(concurrency)]

    async def worker(connection: AsyncConnection) -> None:
        while queue:
            done.append(await connection.exchange(queue.pop(), sse))

    start = time.perf_counter()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(c) for c in connections)), timeout=deadline_s
        )
    finally:
        for connection in connections:
            await connection.close()
    return done, time.perf_counter() - start


async def timed_loop(
    port: int, request: bytes, concurrency: int, seconds: float, sse: bool
) -> tuple[list[Exchange], float]:
    """The same request over `concurrency` kept-alive connections for `seconds`: each
    connection sends its next request as soon as the last one is answered (a closed loop, so
    the rate found is what the server sustains, not what was offered)."""
    connections = [await AsyncConnection.open(port) for _ in range(concurrency)]
    done: list[Exchange] = []
    start = time.perf_counter()
    until = start + seconds

    async def worker(connection: AsyncConnection) -> None:
        while time.perf_counter() < until:
            done.append(await connection.exchange(request, sse))

    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(c) for c in connections)), timeout=seconds + 120
        )
    finally:
        for connection in connections:
            await connection.close()
    return done, time.perf_counter() - start
