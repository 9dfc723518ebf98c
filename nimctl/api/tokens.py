"""POST /tokenize, /detokenize and /v1/chat/completions/render: NIM 2.x's token routes.

They answer what vLLM's own routes answer (the engine's serving classes make the bodies); in
front, the same order as chat: 503 until ready, 404 for another model, then, for a body with
messages, the guards and the media intake, so that a chat is counted and rendered exactly as
`/v1/chat/completions` would take it, and refused where chat would refuse it.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from nimctl.api.chat import resolve_media
from nimctl.api.json_body import parse_json_object
from nimctl.api.state import AppState, app_state, require_model, require_ready
from nimctl.errors import BadRequestError
from nimctl.guards import check_request

router = APIRouter(tags=["tokens"])  # request and response schemas: nimctl.api.schema


@router.post("/tokenize")
async def tokenize(request: Request) -> Response:
    state, payload = await _read_ready(request)
    if tokenize_form(payload) == "messages":
        await _check_messages(state, payload)
    body = await state.engine.tokenize(payload, request.headers)
    return Response(body, media_type="application/json")


@router.post("/detokenize")
async def detokenize(request: Request) -> Response:
    state, payload = await _read_ready(request)
    body = await state.engine.detokenize(payload, request.headers)
    return Response(body, media_type="application/json")


@router.post("/v1/chat/completions/render")
async def render_chat(request: Request) -> Response:
    state, payload = await _read_ready(request)
    await _check_messages(state, payload)
    body = await state.engine.render_chat(payload, request.headers)
    return Response(body, media_type="application/json")


def tokenize_form(payload: dict[str, Any]) -> Literal["prompt", "messages"]:
    """Which of vLLM's two tokenize requests a body is: text (`prompt`) or a chat (`messages`).

    vLLM tries them as a union, so a body with both, or neither, comes back as a dump of two
    models' validation errors; here it is one sentence naming the fields.
    """
    has_prompt, has_messages = "prompt" in payload, "messages" in payload
    if has_prompt and has_messages:
        raise BadRequestError(
            "Send either `prompt` (text to tokenize) or `messages` (a chat to template and "
            "tokenize), not both.",
            param="messages",
        )
    if not (has_prompt or has_messages):
        raise BadRequestError(
            "The request needs `prompt` (text to tokenize) or `messages` (a chat to template "
            "and tokenize).",
            param="prompt",
        )
    return "messages" if has_messages else "prompt"


async def _read_ready(request: Request) -> tuple[AppState, dict[str, Any]]:
    state = app_state(request)
    require_ready(state)
    payload = parse_json_object(await request.body())
    require_model(state, payload)
    return state, payload


async def _check_messages(state: AppState, payload: dict[str, Any]) -> None:
    content = check_request(payload, state.profile)
    await resolve_media(state, payload, content)
