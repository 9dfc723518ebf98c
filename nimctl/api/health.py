"""NIM's probes: live while the process runs, ready only while the engine can serve."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from nimctl.api.state import app_state
from nimctl.errors import error_body

router = APIRouter(tags=["health"])

_LIVE = {"object": "health.response", "message": "Service is live."}
_READY = {"object": "health.response", "message": "Service is ready."}


@router.get("/v1/health/live")
async def live() -> JSONResponse:
    return JSONResponse(_LIVE)


@router.get("/v1/health/ready")
async def ready(request: Request) -> JSONResponse:
    reason = await app_state(request).supervisor.readiness()
    if reason is None:
        return JSONResponse(_READY)
    body = error_body(f"Service is not ready: {reason}.", "ServiceUnavailableError", 503)
    return JSONResponse(body, status_code=503)
