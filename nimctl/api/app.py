"""The application factory: no import-time work, no globals; one app per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import prometheus_client
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from nimctl import __version__
from nimctl.api import chat, health, metrics, models
from nimctl.api.errors import install_error_handlers
from nimctl.api.state import AppState
from nimctl.engine.base import Engine
from nimctl.lifecycle import Supervisor
from nimctl.media.intake import MediaIntake
from nimctl.profiles import Profile
from nimctl.settings import NimSettings


def create_app(
    settings: NimSettings,
    profile: Profile,
    engine: Engine,
    *,
    profile_id: str | None = None,
    registry: CollectorRegistry | None = None,
    intake: MediaIntake | None = None,
) -> FastAPI:
    """Build the NIM-compatible app around `engine`.

    The engine starts in the background when the app's lifespan begins, so HTTP is up at once.
    `registry` defaults to prometheus_client's default registry because that is where vLLM's
    stat logger registers the engine's `vllm:` series.
    """
    supervisor = Supervisor(engine)
    media = intake if intake is not None else MediaIntake.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        supervisor.start()
        try:
            yield
        finally:
            await supervisor.stop()
            await media.aclose()

    app = FastAPI(
        title="nimctl",
        version=__version__,
        description="NVIDIA NIM-compatible API for a vision-language model served by vLLM.",
        lifespan=lifespan,
    )
    app.state.nimctl = AppState(
        settings=settings,
        profile=profile,
        profile_id=profile_id or profile.content_id(),
        engine=engine,
        supervisor=supervisor,
        registry=registry if registry is not None else prometheus_client.REGISTRY,
        intake=media,
    )
    install_error_handlers(app)
    for module in (health, models, chat, metrics):
        app.include_router(module.router)
    return app
