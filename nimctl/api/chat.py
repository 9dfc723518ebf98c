"""POST /v1/chat/completions: validate, then hand over to the engine's chat layer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from nimctl.api.state import app_state, require_ready
from nimctl.errors import BadRequestError
from nimctl.guards import GuardError, check_request
from nimctl.media.intake import MediaError

router = APIRouter(tags=["chat"])
T = TypeVar("T")

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.post("/v1/chat/completions", openapi_extra=_BODY_DOC)
async def chat_completions(request: Request) -> Response:
    state = app_state(request)
    require_ready(state)
    payload = parse_json_object(await request.body())
    try:
        check_request(payload, state.profile)
        await state.intake.resolve(payload, state.profile)
    except GuardError as exc:
        state.metrics.refused.labels(exc.rule).inc()
        raise
    except MediaError as exc:
        state.metrics.media_failures.labels(exc.reason).inc()
        raise
    chat_request = state.engine.parse_chat_request(payload)
    result = await until_disconnect(request, state.engine.chat(chat_request, request))
    if result is None:  # the client left; its engine request has been cancelled
        return Response(status_code=499)
    if result.stream is not None:
        return StreamingResponse(result.stream, media_type="text/event-stream")
    return Response(result.body, media_type="application/json")


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadRequestError("The request body is empty; send a JSON object.")
    try:
        payload = json.loads(body.decode("utf-8"))  # RFC 8259: JSON on the wire is UTF-8
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
    return payload


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
