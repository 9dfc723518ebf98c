"""Hostile clients against the shared tiny server: huge and endless heads, bodies shorter than
their Content-Length, clients that leave halfway, bursts of connections, streams dropped with a
reset, and structured-output constraints the engine cannot follow.

Each is refused with the right status in the error shape (or its connection closed, when
nothing was asked), and afterwards the server is ready, serves a normal request, has counted
no 500 and has logged no traceback. Raw sockets (tests/support/rawhttp.py), because no HTTP library
sends these. The server runs with its default timeouts (NIM_REQUEST_HEADER_TIMEOUT,
NIM_REQUEST_BODY_TIMEOUT): the slow cases run side by side and wait for the answer with a
generous deadline; how long it took is recorded, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from nimctl.http_protocol import MAX_HEAD_BYTES, MAX_HEADERS
from nimctl.settings import NimSettings
from tests.support.errors import assert_error_shape
from tests.support.rawhttp import (
    Answer,
    chat_head,
    closed_unanswered,
    exchange,
    request_head,
    reset,
)
from tests.support.server import Server
from tests.support.tiny import TINY_MODEL
from tests.support.waiting import metric, wait_for

HEAD_TIMEOUT = NimSettings.model_fields["request_header_timeout"].default
BODY_TIMEOUT = NimSettings.model_fields["request_body_timeout"].default
PATIENCE_S = max(HEAD_TIMEOUT, BODY_TIMEOUT) + 90  # a loaded machine answers late, not never
USER = [{"role": "user", "content": "Hello"}]
CHAT = json.dumps({"model": TINY_MODEL, "messages": USER, "max_tokens": 4}).encode()


def address(server: Server) -> tuple[str, int]:
    url = urlparse(server.base_url)
    assert url.hostname and url.port
    return url.hostname, url.port


@pytest.fixture
def healthy_after(tiny_server: Server) -> Iterator[Callable[[], str]]:
    """After the test: ready, a normal request served, no 500 counted, no traceback logged.
    Yields a function returning the server's log since the test began."""
    offset = tiny_server.log_path.stat().st_size
    errors = metric(tiny_server, "nimctl_http_requests_total", status="500")

    def log_since() -> str:
        with tiny_server.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    yield log_since
    with httpx.Client(base_url=tiny_server.base_url, timeout=PATIENCE_S) as client:
        assert client.get("/v1/health/ready").status_code == 200
        response = client.post("/v1/chat/completions", content=CHAT)
        assert response.status_code == 200, response.text
    assert metric(tiny_server, "nimctl_http_requests_total", status="500") == errors
    text = log_since()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


def refusal(answer: Answer, status: int, fragment: str) -> None:
    assert answer.status == status, answer
    message = assert_error_shape(json.loads(answer.body), status)["message"]
    assert fragment in message, message
    assert answer.closed, "a refused connection is closed"


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def test_huge_and_malformed_heads_are_refused(tiny_server, healthy_after, figures):
    host, port = address(tiny_server)
    cases = {
        "one 200 KB header": (
            request_head(b"X-Big: " + b"a" * 200_000 + b"\r\n"),
            431,
            f"larger than {MAX_HEAD_BYTES:,} bytes",
        ),
        "1000 small headers": (
            request_head(b"".join(b"X-H%d: v\r\n" % i for i in range(1000))),
            431,
            f"more than {MAX_HEADERS} header fields",
        ),
        "100 KB request target": (
            request_head(target=b"/v1/models?q=" + b"q" * 100_000),
            414,
            "request target is longer",
        ),
        "malformed header line": (request_head(b"No colon here\r\n"), 400, "malformed"),
    }

    async def run() -> dict[str, Answer]:
        return {
            name: await exchange(host, port, head, patience=PATIENCE_S)
            for name, (head, _, _) in cases.items()
        }

    answers = asyncio.run(run())
    for name, (_, status, fragment) in cases.items():
        refusal(answers[name], status, fragment)
    figures.record(
        "hostile_heads",
        **{name: f"{a.status} in {ms(a.seconds)} ms" for name, a in answers.items()},
    )
    assert "refused a request from" in healthy_after()


def test_slow_heads_and_bodies_time_out_while_others_are_served(
    tiny_server, healthy_after, figures
):
    """Slowloris heads, an idle connection, a body shorter than its length, a body dripping a
    byte a second: all at once, while normal requests keep being answered."""
    host, port = address(tiny_server)
    drip_head = [request_head().removesuffix(b"\r\n"), *(b"X-Drip: 1\r\n" for _ in range(600))]
    drip_body = [chat_head(len(CHAT)), *(CHAT[i : i + 1] for i in range(len(CHAT)))]

    async def run() -> tuple[list[Any], int]:
        slow = asyncio.gather(
            exchange(host, port, *drip_head, pause=1.0, patience=PATIENCE_S),
            closed_unanswered(host, port, PATIENCE_S),
            exchange(host, port, chat_head(1000) + CHAT[:10], patience=PATIENCE_S),
            exchange(host, port, *drip_body, pause=1.0, patience=PATIENCE_S),
        )
        served = 0
        async with httpx.AsyncClient(base_url=tiny_server.base_url, timeout=60) as client:
            while not slow.done():
                response = await client.post("/v1/chat/completions", content=CHAT)
                assert response.status_code == 200, response.text
                served += 1
                await asyncio.sleep(0.5)
        return await slow, served

    (head, idle_s, short_body, dripping_body), served = asyncio.run(run())
    refusal(head, 408, "NIM_REQUEST_HEADER_TIMEOUT")
    refusal(short_body, 408, "10 of 1000 bytes came")
    refusal(dripping_body, 408, "NIM_REQUEST_BODY_TIMEOUT")
    assert served >= 2, "normal requests were not answered meanwhile"
    figures.record(
        "hostile_slow",
        header_timeout_s=HEAD_TIMEOUT,
        body_timeout_s=BODY_TIMEOUT,
        slow_head=f"{head.status} after {head.seconds:.1f} s",
        idle_connection=f"closed unanswered after {idle_s:.1f} s",
        short_body=f"{short_body.status} after {short_body.seconds:.1f} s",
        dripping_body=f"{dripping_body.status} after {dripping_body.seconds:.1f} s",
        normal_requests_meanwhile=served,
    )


def test_a_client_that_lies_about_its_length_and_leaves_is_one_log_line(
    tiny_server, healthy_after, figures
):
    host, port = address(tiny_server)
    left_before = metric(tiny_server, "nimctl_http_requests_total", status="499")

    async def run() -> None:
        await exchange(host, port, chat_head(1000), CHAT[:10], pause=1.0, leave=True)

    asyncio.run(run())
    wait_for(
        lambda: metric(tiny_server, "nimctl_http_requests_total", status="499") > left_before,
        PATIENCE_S,
    )
    lines = [line for line in healthy_after().splitlines() if "client left" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("INFO") and "] [" in lines[0], "one INFO line, with the request id"
    figures.record("hostile_lying_length", counted_as=499, log_lines=len(lines))


def test_a_burst_of_connections(tiny_server, healthy_after, figures):
    """300 connections at once: 200 ask for /v1/models, 100 connect and reset at once."""
    host, port = address(tiny_server)

    async def rude() -> None:
        _, writer = await asyncio.open_connection(host, port)
        reset(writer)

    async def run() -> tuple[list[Any], float]:
        began = time.monotonic()
        outcomes = await asyncio.gather(
            *(exchange(host, port, request_head(), patience=PATIENCE_S) for _ in range(200)),
            *(rude() for _ in range(100)),
            return_exceptions=True,
        )
        return outcomes, time.monotonic() - began

    outcomes, took = asyncio.run(run())
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == []
    statuses = sorted({o.status for o in outcomes if isinstance(o, Answer)})
    assert statuses == [200]
    figures.record(
        "hostile_burst",
        connections=300,
        answered_200=200,
        reset_at_once=100,
        seconds=round(took, 2),
    )


def test_streams_dropped_with_a_reset_free_the_engine(tiny_server, healthy_after, figures):
    host, port = address(tiny_server)
    streams = 16
    body = json.dumps(
        {
            "model": TINY_MODEL,
            "messages": USER,
            "max_tokens": 4000,
            "min_tokens": 4000,
            "ignore_eos": True,
            "stream": True,
        }
    ).encode()

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(chat_head(len(body)) + body)
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"data: "), PATIENCE_S)  # streaming now
        await asyncio.wait_for(reader.readuntil(b'"content":"'), PATIENCE_S)  # tokens flow
        reset(writer)

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(streams))), PATIENCE_S)

    asyncio.run(run())
    dropped = time.monotonic()

    def idle() -> bool:
        return metric(tiny_server, "vllm:num_requests_running") == 0

    wait_for(idle, PATIENCE_S)
    figures.record(
        "hostile_dropped", streams=streams, seconds_to_idle=round(time.monotonic() - dropped, 2)
    )


@pytest.mark.parametrize("stream", [False, True])
def test_structured_outputs_the_engine_cannot_follow_are_400(tiny_server, healthy_after, stream):
    """A $ref that needs itself (checked before the engine) and an EBNF rule without an end
    (caught when the engine finds no first token): 400 naming the field, not 500."""
    schema = {"name": "loop", "schema": {"$ref": "#"}}
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": schema}}, "$ref"),
        ({"structured_outputs": {"grammar": "root ::= root"}}, "grammar"),
    ]
    params = ["response_format.json_schema.schema", "structured_outputs.grammar"]
    with httpx.Client(base_url=tiny_server.base_url, timeout=PATIENCE_S) as client:
        for (extra, word), param in zip(cases, params, strict=True):
            payload = {"model": TINY_MODEL, "messages": USER, "max_tokens": 8, "stream": stream}
            response = client.post("/v1/chat/completions", json={**payload, **extra})
            assert response.status_code == 400, response.text
            error = assert_error_shape(response.json(), 400)
            assert error["param"] == param and word in error["message"], error
