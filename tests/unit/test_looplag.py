"""The loop-lag monitor sees a callback that holds the event loop."""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import time

import pytest

from nimctl.cli import _loop_factory
from nimctl.errors import ConfigError
from nimctl.looplag import LoopLagMonitor
from nimctl.media.intake import BASE64_SLICE, b64decode_sliced

DEADLINE_S = 30.0


async def wait_for_sample(samples: list[float], predicate, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not any(predicate(s) for s in samples):
        assert time.monotonic() < deadline, f"no {what} in {samples[-20:]}"
        await asyncio.sleep(0.02)


async def test_a_blocking_callback_is_measured_as_lag():
    samples: list[float] = []
    monitor = LoopLagMonitor(samples.append, interval_s=0.1)
    monitor.start()
    try:
        await wait_for_sample(samples, lambda s: s >= 0.0, "first sample")
        # Blocks the loop for 0.3 s: the monitor's timer was due at some point during it, so it
        # woke at least 0.3 - 0.1 s late (a lower bound, true on any machine).
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)
        await wait_for_sample(samples, lambda s: s >= 0.2, "lag of 0.2 s or more")
    finally:
        await monitor.stop()
    assert not monitor.running


async def test_samples_are_never_negative_and_stop_ends_sampling():
    samples: list[float] = []
    monitor = LoopLagMonitor(samples.append, interval_s=0.01)
    monitor.start()
    monitor.start()  # a second start is a no-op, not a second task
    await wait_for_sample(samples, lambda s: True, "sample")
    await monitor.stop()
    count = len(samples)
    await asyncio.sleep(0.1)
    assert len(samples) == count
    assert all(s >= 0.0 for s in samples)


async def test_a_long_stall_is_logged(caplog):
    samples: list[float] = []
    monitor = LoopLagMonitor(samples.append, interval_s=0.05, warn_after_s=0.1)
    monitor.start()
    try:
        await wait_for_sample(samples, lambda s: True, "sample")
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)
        await wait_for_sample(samples, lambda s: s >= 0.1, "stall")
    finally:
        await monitor.stop()
    assert any("event loop was blocked" in r.getMessage() for r in caplog.records)


# --- what keeps the loop free: base64 decoded in slices ---------------------------------------


def test_sliced_base64_decodes_as_one_call_does():
    rng = random.Random(7)
    for size in (0, 1, 2, 3, BASE64_SLICE // 4 * 3 - 1, BASE64_SLICE // 4 * 3, 3 * BASE64_SLICE):
        data = rng.randbytes(size)
        assert b64decode_sliced(base64.b64encode(data).decode()) == data


def test_sliced_base64_is_as_strict_as_one_call():
    block = base64.b64encode(b"\xff" * (BASE64_SLICE // 4 * 3)).decode()  # exactly one slice
    cases = [
        "QQ==" + block,  # padding in the middle (a slice of its own would take it)
        block[:-4] + "QQ==" + block,  # padding at the end of the first slice
        block + "QUJ",  # incorrect padding in the last slice
        block[:100] + " " + block,  # whitespace (the caller strips it and tries again)
        block + "é",  # not ASCII
    ]
    for text in cases:
        with pytest.raises((binascii.Error, ValueError)):
            base64.b64decode(text, validate=True)
        with pytest.raises((binascii.Error, ValueError)):
            b64decode_sliced(text)


# --- which loop `serve` runs on (UVICORN_LOOP) --------------------------------------------------


def test_the_loop_is_uvloop_unless_asyncio_is_asked_for():
    import uvloop

    assert _loop_factory("asyncio") is None
    assert _loop_factory(" AsyncIO ") is None
    assert _loop_factory("") is uvloop.new_event_loop  # the default
    assert _loop_factory(" UVLOOP ") is uvloop.new_event_loop
    assert _loop_factory("auto") is uvloop.new_event_loop  # uvicorn's "uvloop if installed"
    with pytest.raises(ConfigError, match="UVICORN_LOOP"):
        _loop_factory("trio")


def test_serve_runs_on_the_chosen_loop():
    import uvloop

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=_loop_factory("uvloop")) as runner:
        assert issubclass(runner.run(loop_type()), uvloop.Loop)
    with asyncio.Runner(loop_factory=_loop_factory("asyncio")) as runner:
        assert not issubclass(runner.run(loop_type()), uvloop.Loop)
