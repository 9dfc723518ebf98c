"""Engine lifecycle: start in the background, report readiness honestly, fail loudly.

HTTP answers from the first second while the engine loads (Kubernetes' liveness probe must not
kill a pod that is busy loading a model). Readiness is true only once the engine has started and
answers its health check, and turns false the moment it stops answering. A failed or dead engine
sets `fatal`, on which the server exits non-zero so that the orchestrator restarts the process
instead of keeping a live-but-useless pod.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from nimctl.adapters import AdapterSync
from nimctl.engine.base import Engine, EngineDeadError
from nimctl.errors import ConfigError
from nimctl.startup import Phase, StartupProgress

logger = logging.getLogger("nimctl.lifecycle")


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"  # SIGTERM: finishing requests in flight, refusing new ones
    FAILED = "failed"
    STOPPING = "stopping"


class Supervisor:
    def __init__(
        self,
        engine: Engine[Any],
        *,
        health_interval_s: float = 1.0,
        on_ready: Callable[[], None] | None = None,
        adapters: AdapterSync | None = None,
        progress: StartupProgress | None = None,
    ) -> None:
        self.engine = engine
        self.adapters = adapters  # NIM_PEFT_SOURCE: loaded before ready, refreshed while ready
        self.on_ready = on_ready
        self.health_interval_s = health_interval_s
        self.state = State.STARTING
        self.progress = progress if progress is not None else StartupProgress()
        self._reason = ""  # why not ready, once no longer starting
        self.fatal = asyncio.Event()
        self.started_at = time.monotonic()
        self.created = int(time.time())
        self.seconds_to_ready: float | None = None
        # Status for the process: 2 for a configuration error, as the CLI uses; 1 otherwise.
        self.exit_code = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="nimctl-engine-start")

    async def _run(self) -> None:
        try:
            await self.engine.start(self.progress)
            if self.adapters is not None:
                self.progress.enter(Phase.LOADING_ADAPTERS)
                await self.adapters.first_sync()
        except asyncio.CancelledError:
            raise
        except ConfigError as exc:
            self._fail(f"configuration error: {exc}", exit_code=2)
            return
        except Exception as exc:
            logger.exception("engine failed to start")
            self._fail(f"engine failed to start: {exc}")
            return
        if self.state is not State.STARTING:
            return
        if self.on_ready is not None:
            self.on_ready()
        self.state = State.READY
        self.progress.enter(Phase.READY, fraction=1.0)
        self.seconds_to_ready = time.monotonic() - self.started_at
        logger.info("ready (%.1f s after start)", self.seconds_to_ready)
        if self.adapters is not None:
            self.adapters.start()
        await self._watch()

    @property
    def reason(self) -> str:
        """Why the server is not ready: while starting, the phase and its progress."""
        if self.state is State.STARTING:
            return self.progress.describe()
        return self._reason

    async def _watch(self) -> None:
        while self.state is State.READY:
            await asyncio.sleep(self.health_interval_s)
            await self.readiness()

    async def readiness(self) -> str | None:
        """None when ready to serve, else why not."""
        if self.state is not State.READY:
            return self.reason
        try:
            await self.engine.check_health()
        except EngineDeadError as exc:
            self._fail(f"engine died: {exc}")
            return self.reason
        return None

    def begin_drain(self) -> None:
        """Refuse new work (ready and model routes answer 503) while requests in flight end."""
        if self.state in (State.STARTING, State.READY):
            self.state = State.DRAINING
            self._reason = "the server is shutting down"
            logger.info("draining: new requests get 503, requests in flight may finish")

    def _fail(self, reason: str, exit_code: int = 1) -> None:
        if self.state is State.STOPPING:
            return
        logger.error("%s", reason)
        self.state = State.FAILED
        self._reason = reason
        self.exit_code = exit_code
        self.fatal.set()

    async def stop(self) -> None:
        self.state = State.STOPPING
        self._reason = "the server is shutting down"
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.adapters is not None:
            await self.adapters.stop()
        await self.engine.shutdown()
