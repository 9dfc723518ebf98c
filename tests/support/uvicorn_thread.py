"""nimctl's real uvicorn set-up (its protocol, middleware and app) on 127.0.0.1 in a thread of
the test process, around the fake engine: for tests that need real sockets but no vLLM."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from nimctl.api import create_app
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from nimctl.server import GracefulServer, uvicorn_config
from nimctl.settings import NimSettings
from tests.support.fake_engine import FakeEngine


@dataclass
class Running:
    port: int
    engine: FakeEngine
    registry: CollectorRegistry  # nimctl's own series


@contextmanager
def running(prepare: Callable[[FastAPI], Any] | None = None, **settings: Any) -> Iterator[Running]:
    """Serve until the block ends; `prepare` sees the app before it starts (e.g. to wrap it)."""
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    engine = FakeEngine(served_model_name=profile.served_model_name)
    engine.release.set()
    registry = CollectorRegistry()
    config = NimSettings(**settings)
    app = create_app(config, profile, engine, registry=registry)
    if prepare is not None:
        prepare(app)
    server = GracefulServer(uvicorn_config(app, config), app, 1.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started and app.state.nimctl.supervisor.state.value == "ready":
                break
            threading.Event().wait(0.01)
        yield Running(sock.getsockname()[1], engine, app.state.nimctl.metrics.registry)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
