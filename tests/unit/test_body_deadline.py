"""The body deadline of BodyLimitMiddleware: one timer per request, effective between receives."""

from __future__ import annotations

import asyncio
from typing import Any

from nimctl.api.middleware import BodyLimitMiddleware
from nimctl.errors import RequestTimeoutError

SCOPE = {"type": "http", "headers": [(b"content-length", b"10")]}


async def _noop_send(message: Any) -> None:
    return None


def _receive_from(messages: list[dict], then_block: bool) -> Any:
    queue = list(messages)

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        if then_block:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


async def _run(app: Any, receive: Any, timeout_s: float) -> list[Any]:
    seen: list[Any] = []

    async def wrapped(scope: Any, recv: Any, send: Any) -> None:
        try:
            await app(recv, seen)
        except RequestTimeoutError as exc:
            seen.append(exc)

    await BodyLimitMiddleware(wrapped, max_bytes=1000, timeout_s=timeout_s)(
        SCOPE, receive, _noop_send
    )
    return seen


async def test_a_pending_receive_is_refused_at_the_deadline() -> None:
    async def app(recv: Any, seen: list[Any]) -> None:
        seen.append(await recv())
        seen.append(await recv())  # blocks until the deadline

    first = {"type": "http.request", "body": b"12345", "more_body": True}
    seen = await _run(app, _receive_from([first], then_block=True), timeout_s=0.05)
    assert seen[0] == first
    assert isinstance(seen[1], RequestTimeoutError)
    assert "5 of 10 bytes came" in seen[1].message


async def test_a_deadline_passed_between_receives_refuses_the_next_one() -> None:
    async def app(recv: Any, seen: list[Any]) -> None:
        seen.append(await recv())
        await asyncio.sleep(0.2)  # past the deadline while not receiving: nothing is cancelled
        seen.append("slept")
        seen.append(await recv())

    chunks = [
        {"type": "http.request", "body": b"12345", "more_body": True},
        {"type": "http.request", "body": b"67890", "more_body": False},
    ]
    seen = await _run(app, _receive_from(chunks, then_block=False), timeout_s=0.05)
    assert seen[1] == "slept"
    assert isinstance(seen[2], RequestTimeoutError)


async def test_a_complete_body_outlives_the_deadline() -> None:
    """A stream runs far longer than NIM_REQUEST_BODY_TIMEOUT: the timer must be gone."""

    async def app(recv: Any, seen: list[Any]) -> None:
        seen.append(await recv())
        await asyncio.sleep(0.2)
        seen.append(await recv())  # waits for the disconnect, as a streaming route does

    body = {"type": "http.request", "body": b"1234567890", "more_body": False}
    seen = await _run(app, _receive_from([body], then_block=False), timeout_s=0.05)
    assert seen == [body, {"type": "http.disconnect"}]


async def test_the_deadline_counts_from_the_request_start_not_the_first_receive() -> None:
    """The timer is armed lazily (routes without a body arm none), but not later in effect."""

    async def app(recv: Any, seen: list[Any]) -> None:
        await asyncio.sleep(0.2)
        seen.append(await recv())

    chunk = {"type": "http.request", "body": b"12345", "more_body": True}
    seen = await _run(app, _receive_from([chunk], then_block=True), timeout_s=0.05)
    assert len(seen) == 1 and isinstance(seen[0], RequestTimeoutError)
