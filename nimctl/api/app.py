"""The application factory: no import-time work, no globals; one app per call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import prometheus_client
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry

from nimctl import __version__
from nimctl.adapters import AdapterSync
from nimctl.admission import Admission, Limits
from nimctl.api import chat, health, meta, metrics, models, tokens
from nimctl.api.errors import install_error_handlers
from nimctl.api.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    HttpMetricsMiddleware,
    Inflight,
    RequestIdMiddleware,
    TracingMiddleware,
)
from nimctl.api.schema import add_chat_schemas, add_token_schemas
from nimctl.api.state import AppState
from nimctl.engine.base import Engine
from nimctl.keys import KeyRing
from nimctl.lifecycle import Supervisor
from nimctl.looplag import LoopLagMonitor
from nimctl.media.intake import MediaIntake
from nimctl.metrics import MetricsExporter, NimctlMetrics, StartupCollector
from nimctl.profiles import Profile
from nimctl.settings import NimSettings
from nimctl.tracing import Tracing


def create_app(
    settings: NimSettings,
    profile: Profile,
    engine: Engine[Any],
    *,
    profile_id: str | None = None,
    registry: CollectorRegistry | None = None,
    intake: MediaIntake | None = None,
    on_ready: Callable[[], None] | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """Build the NIM-compatible app around `engine`.

    The engine starts in the background when the app's lifespan begins, so HTTP is up at once.
    `registry` defaults to prometheus_client's default registry because that is where vLLM's
    stat logger registers the engine's `vllm:` series. `on_ready` runs once, when the engine has
    started and before readiness turns true (the CLI's process-wide start-up steps).
    `tracing` (NIM_ENABLE_OTEL) traces every request; None: no tracing code runs at all.
    """
    adapters = (
        AdapterSync(engine, settings.peft_source.expanduser(), settings.peft_refresh_interval)
        if settings.peft_source is not None
        else None
    )
    supervisor = Supervisor(engine, on_ready=on_ready, adapters=adapters)
    media = intake if intake is not None else MediaIntake.from_settings(settings)
    profile_id = profile_id or profile.content_id()
    own = NimctlMetrics(
        lambda: (supervisor.state.value, supervisor.seconds_to_ready),
        {
            "version": __version__,
            "profile": profile.name,
            "profile_id": profile_id,
            "model": profile.served_model_name,
        },
    )
    own.registry.register(StartupCollector(lambda: supervisor.progress.status))
    inflight = Inflight()
    limits = Limits(settings.max_queued_requests, settings.max_queued_tokens)
    loop_lag = LoopLagMonitor(own.loop_lag.observe)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop_lag.start()
        supervisor.start()
        try:
            yield
        finally:
            await supervisor.stop()
            await media.aclose()
            await loop_lag.stop()

    app = FastAPI(
        title="nimctl",
        version=__version__,
        description="NVIDIA NIM-compatible API for a vision-language model served by vLLM.",
        lifespan=lifespan,
    )
    app.state.nimctl = AppState(
        settings=settings,
        profile=profile,
        profile_id=profile_id,
        engine=engine,
        supervisor=supervisor,
        intake=media,
        metrics=own,
        exporter=MetricsExporter(
            registry if registry is not None else prometheus_client.REGISTRY, own
        ),
        inflight=inflight,
        admission=Admission(limits) if limits.enabled else None,
        tracing=tracing,
    )
    install_error_handlers(app)

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            lora = adapters is not None
            add_chat_schemas(document, [engine.served_model_name], adapters=lora)
            app.openapi_schema = add_token_schemas(
                document, [engine.served_model_name], adapters=lora
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to extend the schema
    for module in (health, models, chat, tokens, metrics, meta):
        app.include_router(module.router)
    # Added innermost first: the request id wraps everything, so every log line carries it.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        timeout_s=settings.request_body_timeout,
    )
    keys = KeyRing.from_settings(
        settings.api_key.get_secret_value() if settings.api_key else None, settings.api_key_file
    )
    if keys is not None:
        app.add_middleware(ApiKeyMiddleware, keys=keys)
    # Outside the key check: a preflight carries no key, and a browser reads a 401 only with
    # CORS headers on it. Absent (no cost at all) unless origins are configured.
    cors = settings.cors
    if cors is not None:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors.allow_origins,
            allow_methods=cors.allow_methods,
            allow_headers=cors.allow_headers,
            expose_headers=cors.expose_headers,
            max_age=cors.max_age,
        )
    app.add_middleware(HttpMetricsMiddleware, metrics=own, inflight=inflight)
    if tracing is not None:  # inside the request id, which its span carries
        app.add_middleware(TracingMiddleware, tracing=tracing)
    app.add_middleware(RequestIdMiddleware)
    return app
