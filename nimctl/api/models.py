"""The model cards of the seed API reference (OpenAI's list plus NIM's max_model_len): the served
model, then its LoRA adapters."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from nimctl.api.state import AppState, app_state, require_ready

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    state = app_state(request)
    require_ready(state)
    base = state.engine.served_model_name
    cards = [model_card(state, base, base, None)]
    # LoRA adapters after the base model, as vLLM lists them: root = the adapter's directory,
    # parent = the base model. They run within the base model's context length.
    adapters = state.engine.adapters
    cards += [model_card(state, name, str(adapters[name]), base) for name in sorted(adapters)]
    return JSONResponse({"object": "list", "data": cards})


def model_card(state: AppState, name: str, root: str, parent: str | None) -> dict[str, Any]:
    created = state.supervisor.created
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "system",
        "root": root,
        "parent": parent,
        "max_model_len": state.engine.max_model_len,
        "permission": [
            {
                "id": f"modelperm-{uuid.uuid5(uuid.NAMESPACE_URL, name).hex}",
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }
