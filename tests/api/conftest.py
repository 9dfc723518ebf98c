from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter

from nimctl.api import create_app
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from nimctl.settings import NimSettings
from tests.support.fake_engine import FakeEngine


@dataclass
class Harness:
    app: FastAPI
    engine: FakeEngine
    client: httpx.AsyncClient
    registry: CollectorRegistry

    async def make_ready(self) -> None:
        self.engine.release.set()
        for _ in range(100):
            if self.app.state.nimctl.supervisor.state.value == "ready":
                return
            await asyncio.sleep(0.01)
        raise AssertionError("never became ready")


@asynccontextmanager
async def _harness(**settings: Any) -> AsyncIterator[Harness]:
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    engine = FakeEngine(served_model_name=profile.served_model_name)
    registry = CollectorRegistry()
    Counter("vllm:prompt_tokens", "test series", registry=registry).inc(3)
    app = create_app(NimSettings(**settings), profile, engine, registry=registry)
    app.state.nimctl.supervisor.health_interval_s = 0.01
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield Harness(app, engine, client, registry)
    assert engine.shut_down


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with _harness() as h:
        yield h


@pytest.fixture
def make_harness() -> Callable[..., AbstractAsyncContextManager[Harness]]:
    """A harness with other settings: `async with make_harness(api_key="k") as h: ...`."""
    return _harness
