"""Event-loop lag: how late the loop wakes a task that only sleeps.

Every request, probe and stream of the process shares one event loop, so any callback that holds
it (CPU work, a blocking call) delays all of them at once: `/v1/health/live` answers late, streams
stall, a drain waits. Such stalls are invisible in per-request timings, which include them
without saying why; a task that sleeps a fixed interval and measures how late it woke sees them
directly, whatever caused them. The cost is one timer wake-up per interval (microseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

logger = logging.getLogger("nimctl.looplag")

DEFAULT_INTERVAL_S = 0.1
# A stall this long is logged as well: probes time out at about this order (Kubernetes' default
# probe timeout is 1 s), and the metric alone would not say when it happened.
WARN_AFTER_S = 1.0


class LoopLagMonitor:
    """Samples the running loop's lag every `interval_s` and hands each sample to `observe`.

    A callback that blocks the loop for B seconds is seen as a lag of at least B - interval_s
    (the timer was due at some point during the block), so the interval bounds what goes unseen.
    """

    def __init__(
        self,
        observe: Callable[[float], None],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        warn_after_s: float = WARN_AFTER_S,
    ) -> None:
        self._observe = observe
        self.interval_s = interval_s
        self.warn_after_s = warn_after_s
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start sampling on the running loop (call from inside it, e.g. the app's lifespan)."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="nimctl-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval_s
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            # Timers fire up to a clock tick early; early is no lag.
            lag = max(0.0, loop.time() - due)
            self._observe(lag)
            if lag >= self.warn_after_s:
                logger.warning(
                    "the event loop was blocked for %.2f s (every request waited meanwhile)", lag
                )
