"""`GET /v1/health/live` is answered by nimctl's HTTP protocol itself (no task, no middleware):
the same answer as the app's route, counted and logged the same, and handed to the app whenever
the shortcut would not be the same (a browser's CORS request, a request pipelined behind one
still being answered). Real sockets against nimctl's uvicorn set-up; the engine is the fake."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from nimctl.observability import request_id
from tests.support import rawhttp
from tests.support.rawhttp import Answer, chat_head, request_head
from tests.support.uvicorn_thread import Running, running

LIVE = b"/v1/health/live"
LIVE_BODY = {"object": "health.response", "message": "Service is live."}
CHAT = json.dumps(
    {"model": "nimctl/tiny-vlm", "messages": [{"role": "user", "content": "hi"}]}
).encode()
PATIENCE_S = 30.0


class SeenPaths:
    """An ASGI layer around the whole app that notes every path the app is asked for."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def seen() -> list[str]:
    return []


@pytest.fixture(scope="module")
def server(seen: list[str]) -> Iterator[Running]:
    def prepare(app: FastAPI) -> None:
        app.add_middleware(SeenPaths, seen=seen)

    with running(prepare, cors_allow_origins="https://ui.example") as it:
        yield it


async def exchange(port: int, *parts: bytes) -> Answer:
    return await rawhttp.exchange("127.0.0.1", port, *parts, patience=PATIENCE_S)


def live_answers(server: Running) -> float:
    return sum(
        sample.value
        for family in server.registry.collect()
        for sample in family.samples
        if sample.name == "nimctl_http_requests_total"
        and sample.labels
        == {"route": "/v1/health/live", "method": "GET", "status": "200", "key": ""}
    )


async def test_the_probe_is_answered_without_the_app(server, seen):
    seen.clear()
    answer = await exchange(server.port, request_head(target=LIVE))
    assert answer.status == 200 and not answer.closed
    assert json.loads(answer.body) == LIVE_BODY
    assert answer.headers["content-type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    assert {"date", "server", "content-length"} <= answer.headers.keys()
    assert seen == []
    models = await exchange(server.port, request_head(target=b"/v1/models"))
    assert models.status == 200 and seen == ["/v1/models"]  # the app is watched


async def test_its_answer_is_the_apps_own(server, seen):
    """A browser's request (Origin) goes to the app, whose CORS layer answers it: same body."""
    seen.clear()
    short = await exchange(server.port, request_head(target=LIVE))
    via_app = await exchange(
        server.port, request_head(b"Origin: https://ui.example\r\n", target=LIVE)
    )
    assert seen == ["/v1/health/live"]
    assert via_app.headers["access-control-allow-origin"] == "https://ui.example"
    assert (via_app.status, via_app.body) == (short.status, short.body)
    assert via_app.headers["content-type"] == short.headers["content-type"]
    assert via_app.headers["content-length"] == short.headers["content-length"]


async def test_a_client_request_id_is_returned_and_an_insane_one_replaced(server):
    own = await exchange(server.port, request_head(b"X-Request-Id: probe-1\r\n", target=LIVE))
    assert own.headers["x-request-id"] == "probe-1"
    bad = await exchange(server.port, request_head(b"X-Request-Id: a b\r\n", target=LIVE))
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])


async def test_it_is_counted_in_the_http_series(server):
    before = live_answers(server)
    for _ in range(3):
        assert (await exchange(server.port, request_head(target=LIVE))).status == 200
    assert live_answers(server) == before + 3


async def test_it_is_logged_as_uvicorn_logs_with_its_request_id(server, caplog):
    ids: list[str | None] = []

    class NoteRequestId(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            ids.append(request_id.get())
            return True

    access = logging.getLogger("uvicorn.access")
    noting = NoteRequestId()
    access.addFilter(noting)
    caplog.set_level(logging.INFO, "uvicorn.access")
    try:
        await exchange(server.port, request_head(b"X-Request-Id: logged-1\r\n", target=LIVE))
    finally:
        access.removeFilter(noting)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == 1 and lines[0].endswith('"GET /v1/health/live HTTP/1.1" 200')
    assert ids == ["logged-1"]


async def test_a_kept_alive_connection_goes_on_after_it(server, seen):
    """Probes, a GET body the probe does not read, and app requests on one connection."""
    seen.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        requests = [
            request_head(target=LIVE),
            request_head(b"Content-Length: 5\r\n", target=LIVE) + b"hello",
            request_head(target=b"/v1/models"),
            request_head(target=LIVE),
        ]
        for head in requests:
            writer.write(head)
            await writer.drain()
            answer = await asyncio.wait_for(rawhttp.read_answer(reader), PATIENCE_S)
            assert answer.status == 200 and "connection" not in answer.headers
        assert seen == ["/v1/models"]
    finally:
        writer.close()


@pytest.mark.parametrize(
    "head",
    [
        request_head(b"Connection: close\r\n", target=LIVE),
        b"GET /v1/health/live HTTP/1.0\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_client_that_ends_the_connection_gets_it_closed(server, head):
    answer = await exchange(server.port, head)
    assert answer.status == 200 and json.loads(answer.body) == LIVE_BODY
    assert answer.headers["connection"] == "close" and answer.closed


async def test_a_probe_pipelined_behind_a_chat_is_answered_after_it(server, seen):
    """Both arrive in one write: the chat's answer is not sent yet when the probe is parsed, so
    the app answers the probe, in order."""
    seen.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(chat_head(len(CHAT)) + CHAT + request_head(target=LIVE))
        await writer.drain()
        first = await asyncio.wait_for(rawhttp.read_answer(reader), PATIENCE_S)
        second = await asyncio.wait_for(rawhttp.read_answer(reader), PATIENCE_S)
    finally:
        writer.close()
    assert first.status == 200 and json.loads(first.body)["object"] == "chat.completion"
    assert second.status == 200 and json.loads(second.body) == LIVE_BODY
    assert seen == ["/v1/chat/completions", "/v1/health/live"]


async def test_other_methods_and_targets_go_to_the_app(server, seen):
    seen.clear()
    post = await exchange(
        server.port, request_head(b"Content-Length: 0\r\n", target=LIVE, method=b"POST")
    )
    query = await exchange(server.port, request_head(target=LIVE + b"?verbose=1"))
    assert seen == ["/v1/health/live", "/v1/health/live"]
    assert query.status == 200 and json.loads(query.body) == LIVE_BODY
    assert post.status == 405  # as before: the route is GET only
