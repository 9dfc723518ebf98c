"""Running the app under uvicorn: TLS, a graceful drain on SIGTERM, a fast exit on failure.

- TLS: nimctl builds the SSL context (`nimctl.tls`) and hands it to uvicorn through its public
  `ssl_context_factory`; while the server runs, the context is reloaded when cert-manager (or
  anyone) replaces the key, certificate or CA files.

- First SIGTERM / SIGINT: drain. Ready turns 503 (the orchestrator stops routing here), new
  model requests get 503, requests in flight (streams included) may finish for up to
  NIM_SHUTDOWN_GRACE_PERIOD seconds; then the server stops, the engine shuts down, exit 0.
- A second signal stops at once.
- Engine failure or death: the server stops without waiting for connections; exit 1 (2 for a
  configuration error found while starting the engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from nimctl.api.health import LiveShortcut
from nimctl.http_protocol import HeadLimits, bounded_protocol
from nimctl.settings import NimSettings
from nimctl.tls import ReloadingTls

if TYPE_CHECKING:
    from fastapi import FastAPI

    from nimctl.api.state import AppState

logger = logging.getLogger("nimctl.server")
KEEP_ALIVE_S = 75
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        grace_s: float,
        tls: ReloadingTls | None = None,
    ) -> None:
        super().__init__(config)
        self._state = app.state.nimctl
        self._grace_s = grace_s
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.tls = tls

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's serve, with the TLS files watched for as long as it runs."""
        watch = asyncio.create_task(self.tls.watch()) if self.tls is not None else None
        try:
            await super().serve(sockets)
        finally:
            if watch is not None:
                watch.cancel()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM start the drain (a second one stops at once), through uvicorn's
        public `handle_exit`. Unlike uvicorn's own, the signal is not raised again after the
        server stops: a completed graceful stop is a normal exit (status 0)."""
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None:
            super().handle_exit(sig, frame)  # the second signal: stop now
            return
        self._draining = True
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        self._state.supervisor.begin_drain()
        deadline = time.monotonic() + self._grace_s
        while self._state.inflight.count > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._state.inflight.count:
            logger.warning(
                "grace period over with %d request(s) in flight", self._state.inflight.count
            )
        self.should_exit = True


def make_server(app: FastAPI, settings: NimSettings) -> GracefulServer:
    """The server for `app`, with its TLS context (reloaded while it serves) if TLS is on."""
    tls = ReloadingTls.from_settings(settings)
    return GracefulServer(
        uvicorn_config(app, settings, tls), app, settings.shutdown_grace_period, tls
    )


def uvicorn_config(
    app: FastAPI, settings: NimSettings, tls: ReloadingTls | None = None
) -> uvicorn.Config:
    """uvicorn's configuration; `tls` is the context to serve with (None: plain HTTP)."""
    if (tls is None) != (settings.ssl_mode == "DISABLED"):
        raise ValueError(f"NIM_SSL_MODE={settings.ssl_mode} with tls={tls!r}")
    # The drain has already waited for requests in flight; what is left is idle connections.
    # Keep-alive outlives the usual load-balancer idle timeout (60 s): with uvicorn's 5 s, a
    # client reusing a connection as the server closes it gets a dropped request, which the
    # benchmark saw under load for vLLM's server and nimctl alike.
    state: AppState = app.state.nimctl  # Starlette's app.state is untyped
    return uvicorn.Config(
        app,
        # httptools, with bounds on request heads (size, count, time) that uvicorn lacks
        http=bounded_protocol(
            HeadLimits(timeout_s=settings.request_header_timeout),
            shortcuts=(LiveShortcut(state.metrics),),
        ),
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_S,
        ssl_context_factory=tls.context_factory if tls is not None else None,
    )


async def serve(app: FastAPI, sock: socket.socket, settings: NimSettings) -> int:
    server = make_server(app, settings)
    state: AppState = app.state.nimctl  # Starlette's app.state is untyped
    supervisor = state.supervisor

    async def stop_when_fatal() -> None:
        await supervisor.fatal.wait()
        server.should_exit = True
        server.force_exit = True  # a dead engine will not finish what is in flight

    watcher = asyncio.create_task(stop_when_fatal())
    host, port = sock.getsockname()[:2]
    scheme = "http" if settings.ssl_mode == "DISABLED" else "https"
    logger.info(
        "listening on %s://%s:%d (model loading; ready at /v1/health/ready)", scheme, host, port
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
    return supervisor.exit_code
