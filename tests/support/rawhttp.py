"""HTTP/1.1 by hand over asyncio streams, for clients that no HTTP library would be: heads that
never end, bodies shorter than their Content-Length, clients that leave halfway. Shared by the
in-process tests (tests/api/test_http_bounds.py) and the reliability suite's hostile part."""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after answering
    seconds: float = 0.0  # from connecting to the end of the answer


async def exchange(
    host: str,
    port: int,
    *parts: bytes,
    pause: float = 0.0,
    leave: bool = False,
    patience: float = 30.0,
) -> Answer:
    """Send `parts` (`pause` seconds apart) while reading one answer, and whether the
    connection ends after it. `leave`: close once everything is sent, read nothing.

    A slow sender stops once answered: the server may close (and reset) the connection then.
    """
    loop = asyncio.get_running_loop()
    began = loop.time()
    reader, writer = await asyncio.open_connection(host, port)

    async def send() -> None:
        for index, part in enumerate(parts):
            if index and pause:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()

    sending = asyncio.create_task(send())
    try:
        if leave:
            await sending
            return Answer(0, {}, b"", True, loop.time() - began)
        answer = await asyncio.wait_for(read_answer(reader), patience)
        answer.seconds = loop.time() - began
        return answer
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    closed = False
    if headers.get("connection") == "close":
        try:
            closed = await reader.read() == b""  # b"" once the server has closed the connection
        except ConnectionResetError:
            # Closed while a slow sender's bytes were still arriving: the kernel answers those
            # with a reset, which can come before the end of the stream is read.
            closed = True
    return Answer(int(status_line.split()[1]), headers, body, closed)


async def closed_unanswered(host: str, port: int, patience: float) -> float:
    """Connect, send nothing; seconds until the server closes without a byte."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        assert await asyncio.wait_for(reader.read(), patience) == b""
        return loop.time() - began
    finally:
        writer.close()


def reset(writer: asyncio.StreamWriter) -> None:
    """Drop a connection the rude way: RST instead of FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def request_head(*headers: bytes, target: bytes = b"/v1/models", method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\nHost: test\r\n" + b"".join(headers) + b"\r\n"


def chat_head(length: int) -> bytes:
    return request_head(
        b"Content-Type: application/json\r\n",
        b"Content-Length: %d\r\n" % length,
        target=b"/v1/chat/completions",
        method=b"POST",
    )
