"""Prometheus text at NIM's path (/v1/metrics) and the conventional one (/metrics)."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from nimctl.api.state import app_state

router = APIRouter(tags=["metrics"])


@router.get("/v1/metrics")
@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(app_state(request).exporter.render(), media_type=CONTENT_TYPE_LATEST)
