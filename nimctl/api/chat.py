"""POST /v1/chat/completions: validate, then hand over to the engine's chat layer."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from nimctl.admission import Ticket, choices, estimate_tokens
from nimctl.api.state import AppState, app_state, require_model, require_ready
from nimctl.errors import BadRequestError
from nimctl.guards import check_request
from nimctl.guards.base import Content
from nimctl.tracing import span
from nimctl.validation_errors import key_path

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


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadRequestError("The request body is empty; send a JSON object.")
    wide: list[_WideInteger] = []

    def integer(text: str) -> int | _WideInteger:
        if len(text) < 19:  # 18 digits and a sign: always within 64 bits
            return int(text)
        value = int(text) if len(text) <= 20 else None  # no int() of a 5,000-digit literal
        if value is not None and INT64_MIN <= value <= INT64_MAX:
            return value
        wide.append(_WideInteger(text))
        return wide[-1]

    try:
        # RFC 8259: JSON on the wire is UTF-8, and NaN / Infinity are not JSON numbers (Python
        # reads them, and a NaN temperature would pass every range check downstream).
        payload = json.loads(
            body.decode("utf-8"),
            parse_constant=_not_a_number,
            parse_float=_finite_float,
            parse_int=integer,
        )
    except UnicodeDecodeError:
        raise BadRequestError("The request body is not valid UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}."
        ) from None
    except RecursionError:
        raise BadRequestError("The request body is nested too deeply.") from None
    if not isinstance(payload, dict):
        raise BadRequestError(
            f"The request body must be a JSON object, not {type(payload).__name__}."
        )
    if wide:
        _refuse_wide_integer(payload, wide[0])
    # find() of one byte is ~5x faster than the regex over a 20 MB base64 body with no escapes.
    backslash = body.find(b"\\")
    if backslash >= 0 and _SURROGATE_ESCAPE.search(body, backslash):
        _refuse_lone_surrogates(payload)
    return payload


# The integers every field takes at most: one beyond came back as a 500 with no message
# (`top_k` of 2.9e27, found by the fuzzer; where in the engine it failed was not traced).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class _WideInteger:
    """An integer literal beyond 64 bits, kept as its text until its place in the body is found."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _refuse_wide_integer(payload: dict[str, Any], first: _WideInteger) -> None:
    param = key_path(_path_to(payload, first) or ()) or None
    where = f"`{param}`: " if param else ""
    shown = (
        first.text if len(first.text) <= 40 else f"{first.text[:40]}... ({len(first.text)} digits)"
    )
    raise BadRequestError(
        f"Invalid request: {where}{shown} is outside the 64-bit integer range; it must be "
        f"greater than or equal to {INT64_MIN} and less than or equal to {INT64_MAX}.",
        param=param,
    )


def _path_to(payload: Any, target: object) -> tuple[str | int, ...] | None:
    """Where `target` is in the body (a loop, not recursion: the body may be nested deep)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(payload, ())]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if isinstance(node, dict):
            stack.extend((value, (*path, key)) for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((value, (*path, i)) for i, value in reversed(list(enumerate(node))))
    return None


# A \uD800-\uDFFF escape: half of a pair, or a lone surrogate that no UTF-8 text can hold.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _not_a_number(name: str) -> float:
    raise BadRequestError(f"The request body is not valid JSON: {name} is not a JSON number.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequestError(
            f"The request body has the number {text[:40]}, too large for a float (Infinity)."
        )
    return value


def _refuse_lone_surrogates(payload: Any) -> None:
    """Pairs were joined by the decoder; a surrogate left over cannot be encoded as UTF-8."""
    stack = [payload]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequestError(
                    "The request body has a lone UTF-16 surrogate escape (\\uD800-\\uDFFF) in "
                    f"the string {item[:40]!r}; send valid Unicode."
                ) from None


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
