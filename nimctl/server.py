"""Running the app under uvicorn: TLS, a graceful drain on SIGTERM, a fast exit on failure.

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
import ssl
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, TypedDict

import uvicorn

from nimctl.http_protocol import HeadLimits, bounded_protocol
from nimctl.settings import NimSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from nimctl.api.state import AppState

logger = logging.getLogger("nimctl.server")
KEEP_ALIVE_S = 75
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self._state = app.state.nimctl
        self._grace_s = grace_s
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

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


class _TlsArgs(TypedDict, total=False):
    """uvicorn.Config's TLS arguments, those nimctl sets."""

    ssl_keyfile: str
    ssl_certfile: str
    ssl_ca_certs: str
    ssl_cert_reqs: int


def uvicorn_config(app: FastAPI, settings: NimSettings) -> uvicorn.Config:
    tls: _TlsArgs = {}
    if settings.ssl_mode != "DISABLED":
        tls = {
            "ssl_keyfile": str(settings.ssl_key_path),
            "ssl_certfile": str(settings.ssl_cert_path),
        }
        if settings.ssl_mode == "MTLS":
            tls["ssl_ca_certs"] = str(settings.ssl_ca_certs_path)
            tls["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    # The drain has already waited for requests in flight; what is left is idle connections.
    # Keep-alive outlives the usual load-balancer idle timeout (60 s): with uvicorn's 5 s, a
    # client reusing a connection as the server closes it gets a dropped request, which the
    # benchmark saw under load for vLLM's server and nimctl alike.
    return uvicorn.Config(
        app,
        # httptools, with bounds on request heads (size, count, time) that uvicorn lacks
        http=bounded_protocol(HeadLimits(timeout_s=settings.request_header_timeout)),
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_S,
        **tls,
    )


async def serve(app: FastAPI, sock: socket.socket, settings: NimSettings) -> int:
    server = GracefulServer(uvicorn_config(app, settings), app, settings.shutdown_grace_period)
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
