"""Where a start-up is: the phase, how far through it, and a line a person can read.

A start can take from seconds (a generated model) to an hour (hundreds of GiB downloaded, then
loaded). Without this, the only sign of life is a readiness probe answering "loading" for all of
it. The engine's `start` is handed one `StartupProgress` and moves it through the phases; the
supervisor's readiness message, the `nimctl_startup_*` gauges and the log all read the same
object, so they cannot disagree.

Updates come from worker threads (the download meter, the engine's start off the event loop)
and are read on the loop: a status is an immutable value swapped in whole, never half written.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("nimctl.startup")

# A phase's progress is logged at most this often; entering a phase is always logged.
LOG_INTERVAL_S = 5.0
# A phase with no measurable progress says how long it has been going once it is this old:
# "still at it after 6 min" is what tells slow from stuck.
SHOW_ELAPSED_AFTER_S = 10.0


class Phase(enum.Enum):
    """The phases of a start, in order; the value is the `phase` label of the gauges."""

    RESOLVING_PROFILE = "resolving_profile"
    DOWNLOADING_WEIGHTS = "downloading_weights"
    GENERATING_WEIGHTS = "generating_weights"
    JOINING_CLUSTER = "joining_cluster"
    # Importing vLLM (tens of seconds on a busy machine) and its check of the configuration.
    CONFIGURING_ENGINE = "configuring_engine"
    # vLLM loads the weights, profiles memory and allocates the KV cache inside one call
    # (`AsyncLLM.from_vllm_config`), in its engine-core process: one phase from outside.
    LOADING_WEIGHTS_AND_STARTING_ENGINE = "loading_weights_and_starting_engine"
    WARMING_UP = "warming_up"
    LOADING_ADAPTERS = "loading_adapters"
    READY = "ready"

    @property
    def text(self) -> str:
        return _TEXT[self]


_TEXT = {
    Phase.RESOLVING_PROFILE: "resolving the profile",
    Phase.DOWNLOADING_WEIGHTS: "downloading weights",
    Phase.GENERATING_WEIGHTS: "generating the model",
    Phase.JOINING_CLUSTER: "waiting for the nodes of the Ray cluster",
    Phase.CONFIGURING_ENGINE: "importing vLLM and configuring the engine",
    Phase.LOADING_WEIGHTS_AND_STARTING_ENGINE: "loading weights and starting the engine",
    Phase.WARMING_UP: "warming up",
    Phase.LOADING_ADAPTERS: "loading LoRA adapters",
    Phase.READY: "ready",
}


@dataclass(frozen=True)
class Status:
    phase: Phase
    fraction: float | None  # of the current phase, 0-1; None when it cannot be measured
    detail: str  # e.g. "1.2 of 4.5 GiB (27 %), about 40 s left"; may be empty
    since: float  # the clock when the phase began

    def describe(self) -> str:
        """`downloading weights, 1.2 of 4.5 GiB (27 %), about 40 s left`."""
        return f"{self.phase.text}, {self.detail}" if self.detail else self.phase.text


class StartupProgress:
    """The current phase of a start, updated by the engine and read by everyone else.

    `clock` and `log` are injectable so that the rate limit is tested without sleeping.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
        log_interval_s: float = LOG_INTERVAL_S,
    ) -> None:
        self._clock = clock
        self._log = log
        self._interval = log_interval_s
        self._lock = threading.Lock()
        self._status = Status(Phase.RESOLVING_PROFILE, None, "", clock())
        self._logged_at = -math.inf

    @property
    def status(self) -> Status:
        return self._status

    def describe(self) -> str:
        """The status as a person reads it; a long phase with no measurable progress says how
        long it has run: `loading weights and starting the engine, 6 min so far`."""
        status = self._status
        elapsed = self._clock() - status.since
        if status.fraction is not None or status.phase is Phase.READY:
            return status.describe()
        if elapsed < SHOW_ELAPSED_AFTER_S:
            return status.describe()
        return f"{status.describe()}, {duration(elapsed)} so far"

    def enter(self, phase: Phase, detail: str = "", fraction: float | None = None) -> None:
        """Begin `phase` (logged at once, with how long the previous one took)."""
        with self._lock:
            now = self._clock()
            previous = self._status
            status = self._status = Status(phase, _clamp(fraction), detail, now)
            self._logged_at = now
        took = f" ({previous.phase.text} took {now - previous.since:.1f} s)"
        self._log.info("start-up: %s%s", status.describe(), took)

    def update(self, fraction: float | None, detail: str = "") -> None:
        """Progress within the current phase; logged at most once per `log_interval_s`."""
        with self._lock:
            now = self._clock()
            current = self._status
            status = self._status = Status(current.phase, _clamp(fraction), detail, current.since)
            due = now - self._logged_at >= self._interval
            if due:
                self._logged_at = now
        if due:
            self._log.info("start-up: %s", status.describe())

    def download(self, done: int, total: int, bytes_per_s: float) -> None:
        """Progress of the weights' download: bytes on disk of `total`, at the rate so far."""
        self.update(done / total if total else None, download_detail(done, total, bytes_per_s))


def download_detail(done: int, total: int, bytes_per_s: float) -> str:
    """`1.2 of 4.5 GiB (27 %), about 40 s left`; no estimate while nothing has moved yet."""
    value, unit = _scale(total)
    percent = f" ({100 * done / total:.0f} %)" if total else ""
    text = f"{done / value:.1f} of {total / value:.1f} {unit}{percent}"
    left = total - done
    if bytes_per_s > 0 and left > 0:
        text += f", about {duration(left / bytes_per_s)} left"
    return text


def duration(seconds: float) -> str:
    """`40 s`, `3 min`, `1 h 05 min`: coarse, as an estimate should read."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _scale(total: int) -> tuple[int, str]:
    for unit, value in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if total >= value:
            return value, unit
    return 1, "B"


def _clamp(fraction: float | None) -> float | None:
    return None if fraction is None else min(max(fraction, 0.0), 1.0)
