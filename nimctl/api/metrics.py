"""Prometheus text at NIM's path (/v1/metrics) and the conventional one (/metrics)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from nimctl.api.state import app_state

router = APIRouter(tags=["metrics"])


@router.get("/v1/metrics")
@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    # On a worker thread: rendering vLLM's series and ours takes 10-20 ms of CPU per scrape,
    # which on the loop would stall every request and stream for as long; a thread holds the
    # GIL only for a switch interval (5 ms) at a time while the loop has work.
    body = await asyncio.to_thread(app_state(request).exporter.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
