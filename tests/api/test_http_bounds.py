"""Hostile clients at the HTTP level, against nimctl's real uvicorn set-up on 127.0.0.1 (the
engine is the fake one): heads too large, too many or too slow, bodies that stall or whose
client leaves. Raw sockets, because well-behaved clients cannot send these.

The timeouts are set to a fraction of a second here; each test waits for the server's answer
with a generous deadline and asserts what came, never how fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from nimctl.http_protocol import MAX_HEAD_BYTES, MAX_HEADERS
from tests.support import rawhttp
from tests.support.errors import assert_error_shape
from tests.support.rawhttp import Answer, chat_head, request_head
from tests.support.uvicorn_thread import Running, running

MODEL = "nimctl/tiny-vlm"
CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
PATIENCE_S = 30.0  # how long a test waits for an answer: far above the timeouts set


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with running(request_header_timeout=0.5, request_body_timeout=0.5) as it:
        yield it


async def exchange(port: int, *parts: bytes, **options: Any) -> Answer:
    return await rawhttp.exchange("127.0.0.1", port, *parts, patience=PATIENCE_S, **options)


def assert_refusal(answer: Answer, status: int, fragment: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    assert fragment in assert_error_shape(json.loads(answer.body), status)["message"]
    assert answer.headers["connection"] == "close" and answer.closed


async def still_serves(port: int) -> None:
    answer = await exchange(port, chat_head(len(CHAT)) + CHAT)
    assert answer.status == 200, answer
    ready = await exchange(port, request_head(target=b"/v1/health/ready"))
    assert ready.status == 200


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.levelno < logging.ERROR and record.exc_info is None, record.getMessage()


# --- heads ------------------------------------------------------------------------------------


async def test_a_200_kb_header_gets_431(server, caplog):
    answer = await exchange(server.port, request_head(b"X-Big: " + b"a" * 200_000 + b"\r\n"))
    assert_refusal(answer, 431, f"larger than {MAX_HEAD_BYTES:,} bytes")
    await still_serves(server.port)
    assert_no_traceback(caplog)


async def test_1000_small_headers_get_431(server):
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    answer = await exchange(server.port, request_head(fields))
    assert_refusal(answer, 431, f"more than {MAX_HEADERS} header fields")
    await still_serves(server.port)


async def test_a_header_line_that_never_ends_is_cut_off_before_it_does():
    """The part of a line not yet ended sits in httptools' buffer, unseen by on_header: it is
    bounded by the bytes received, sent here 1 KiB at a time and never ended."""
    with running(request_header_timeout=60) as it:
        chunks = [request_head().removesuffix(b"\r\n") + b"X-Endless: "]
        chunks += [b"a" * 1024] * (MAX_HEAD_BYTES // 1024 + 8)
        answer = await exchange(it.port, *chunks)
        assert_refusal(answer, 431, "larger than")


async def test_a_100_kb_request_target_gets_414(server):
    answer = await exchange(server.port, request_head(target=b"/v1/models?q=" + b"q" * 100_000))
    assert_refusal(answer, 414, "request target is longer")


async def test_a_head_just_under_the_caps_is_served(server):
    fields = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 500) for i in range(MAX_HEADERS - 2))
    assert len(fields) < MAX_HEAD_BYTES
    answer = await exchange(server.port, request_head(fields))
    assert answer.status == 200 and not answer.closed


async def test_a_malformed_head_gets_400_in_the_error_shape(server):
    answer = await exchange(server.port, b"GET /v1/models HTTP/1.1\r\nBad Header\r\n\r\n")
    assert_refusal(answer, 400, "malformed")


async def test_a_slow_head_gets_408(server, caplog):
    """Slowloris: the head never ends, a byte now and then."""
    drip = [request_head().removesuffix(b"\r\n"), *(b"X-A: b\r\n" for _ in range(40))]
    answer = await exchange(server.port, *drip, pause=0.1)
    assert_refusal(answer, 408, "NIM_REQUEST_HEADER_TIMEOUT")
    assert any("408" in r.getMessage() for r in caplog.records)
    await still_serves(server.port)


async def test_a_connection_that_sends_nothing_is_closed_unanswered(server):
    await rawhttp.closed_unanswered("127.0.0.1", server.port, PATIENCE_S)


async def test_keep_alive_requests_are_not_timed_out_between_them(server):
    """The head timer runs from a head's first byte, not across an idle kept-alive gap."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(2):
            writer.write(request_head())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE_S)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(1.0)  # idle for twice the head timeout
    finally:
        writer.close()


# --- bodies -----------------------------------------------------------------------------------


async def test_a_body_shorter_than_its_length_gets_408(server, caplog):
    served = len(server.engine.requests)
    answer = await exchange(server.port, chat_head(1000) + CHAT[:10])
    assert_refusal(answer, 408, "10 of 1000 bytes came")
    assert "NIM_REQUEST_BODY_TIMEOUT" in json.loads(answer.body)["error"]["message"]
    assert len(server.engine.requests) == served
    await still_serves(server.port)
    assert_no_traceback(caplog)


async def test_a_dripping_body_gets_408_at_the_deadline(server):
    """A byte at a time keeps no idle timer from firing: the deadline is for the whole body."""
    drip = [chat_head(len(CHAT)), *(CHAT[i : i + 1] for i in range(len(CHAT)))]
    answer = await exchange(server.port, *drip, pause=0.1)
    assert_refusal(answer, 408, "NIM_REQUEST_BODY_TIMEOUT")


async def test_a_client_leaving_mid_body_is_one_line_not_a_traceback(server, caplog):
    caplog.set_level(logging.INFO)
    before = answered(server, "499")
    await exchange(server.port, chat_head(1000) + CHAT[:10], leave=True)
    for _ in range(int(PATIENCE_S / 0.05)):
        if answered(server, "499") > before:
            break
        await asyncio.sleep(0.05)
    assert answered(server, "499") == before + 1
    assert answered(server, "500") == 0
    left = [r for r in caplog.records if "client left" in r.getMessage()]
    assert len(left) == 1 and left[0].levelno == logging.INFO
    assert_no_traceback(caplog)
    await still_serves(server.port)


def answered(server: Running, status: str) -> float:
    return sum(
        sample.value
        for family in server.registry.collect()
        for sample in family.samples
        if sample.name == "nimctl_http_requests_total" and sample.labels["status"] == status
    )
