"""Prometheus text at NIM's path (/v1/metrics) and the conventional one (/metrics)."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from nimctl.api.state import app_state

router = APIRouter(tags=["metrics"])


@router.get("/v1/metrics")
@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(app_state(request).registry), media_type=CONTENT_TYPE_LATEST)
