"""POST /v1/chat/completions: validate, then hand over to the engine's chat layer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from nimctl.admission import Ticket, choices, estimate_tokens
from nimctl.api.json_body import parse_json_object
from nimctl.api.state import AppState, app_state, require_model, require_ready
from nimctl.guards import check_request
from nimctl.guards.base import Content
from nimctl.tracing import span

router = APIRouter(tags=["chat"])
T = TypeVar("T")


@router.post("/v1/chat/completions")  # request schema: nimctl.api.schema
async def chat_completions(request: Request) -> Response:
    state = app_state(request)
    require_ready(state)
    payload = parse_json_object(await request.body())
    model = require_model(state, payload)
    state.metrics.chat_requests.labels(model).inc()
    tracing = state.tracing  # None unless NIM_ENABLE_OTEL: no span work then
    with span(tracing, "guards"):
        content = check_request(payload, state.profile)
    ticket = admit(state, payload, content)  # 429 here, before any media is fetched
    try:
        await resolve_media(state, payload, content)
        chat_request = state.engine.parse_chat_request(payload)
        with span(tracing, "engine") as engine_span:  # vLLM's llm_request span: its child
            headers = (
                request.headers if tracing is None else tracing.engine_headers(request.headers)
            )
            result = await until_disconnect(request, state.engine.chat(chat_request, headers))
            if result is not None and result.media_tokens:
                state.metrics.media.observe_tokens(result.media_tokens)
                if tracing is not None:
                    tracing.media_tokens(engine_span, result.media_tokens)
    except BaseException:
        if ticket is not None:
            ticket.release()
        raise
    if result is None:  # the client left; its engine request has been cancelled
        if ticket is not None:
            ticket.release()
        return Response(status_code=499)
    if result.stream is not None:
        stream = result.stream if tracing is None else tracing.stream_span(result.stream)
        if ticket is not None:
            return AdmittedStream(stream, ticket)
        return StreamingResponse(stream, media_type="text/event-stream")
    if ticket is not None:
        ticket.release()
    return Response(result.body, media_type="application/json")


async def resolve_media(state: AppState, payload: dict[str, Any], content: Content) -> None:
    """The media intake, observed in the media histograms (and traced, when tracing is on)."""
    tracing = state.tracing if content.media else None
    with span(tracing, "media"):
        report = await state.intake.resolve(
            payload, state.profile, state.engine.media_hash, content
        )
        if tracing is not None and report is not None:
            tracing.media_spans(report)
    if report is not None:
        state.metrics.media.observe(report)


def admit(state: AppState, payload: dict[str, Any], content: Content) -> Ticket | None:
    if state.admission is None:
        return None
    tokens = estimate_tokens(payload, content, state.engine.media_tokens)
    return state.admission.admit(choices(payload), tokens)


class AdmittedStream(StreamingResponse):
    """A stream that gives its admission back: its prompt tokens at its first event (prefill is
    over), the rest when the response ends, however it ends (a client that leaves included)."""

    def __init__(self, stream: AsyncIterator[str], ticket: Ticket) -> None:
        super().__init__(_tokens_freed_at_first(stream, ticket), media_type="text/event-stream")
        self._ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._ticket.release()


async def _tokens_freed_at_first(stream: AsyncIterator[str], ticket: Ticket) -> AsyncIterator[str]:
    try:
        async for event in stream:  # the first event only: nothing more per token
            ticket.prefilled()
            yield event
            break
        async for event in stream:
            yield event
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


async def until_disconnect(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work`, cancelling it if the client disconnects first (the body is already read).

    Cancellation reaches the engine's generator, which aborts the request, so no tokens are
    computed for a client that has gone.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
