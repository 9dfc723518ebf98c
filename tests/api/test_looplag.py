"""The app measures its event loop's lag and exports it at /v1/metrics."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

DEADLINE_S = 30.0


def lag_samples(text: str) -> dict[str, float]:
    return {
        sample.name + sample.labels.get("le", ""): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "nimctl_event_loop_lag_seconds"
        for sample in family.samples
    }


async def test_a_blocked_loop_shows_in_the_lag_metric(harness):
    deadline = time.monotonic() + DEADLINE_S
    # The monitor runs from the lifespan's start, whether or not the engine is ready.
    while not lag_samples((await harness.client.get("/v1/metrics")).text).get(
        "nimctl_event_loop_lag_seconds_count"
    ):
        assert time.monotonic() < deadline, "the monitor took no sample"
        await asyncio.sleep(0.05)
    # Something holds the loop for 0.3 s: the monitor (interval 0.1 s) wakes >= 0.2 s late.
    asyncio.get_running_loop().call_soon(time.sleep, 0.3)
    while True:
        samples = lag_samples((await harness.client.get("/v1/metrics")).text)
        count = samples["nimctl_event_loop_lag_seconds_count"]
        if count > samples["nimctl_event_loop_lag_seconds_bucket0.1"]:
            break
        assert time.monotonic() < deadline, f"no lag above 0.1 s in {samples}"
        await asyncio.sleep(0.05)
    assert samples["nimctl_event_loop_lag_seconds_sum"] >= 0.2
    assert count - samples["nimctl_event_loop_lag_seconds_bucket0.1"] >= 1


async def test_the_monitor_stops_with_the_app(make_harness):
    async with make_harness() as harness:
        tasks = {t.get_name() for t in asyncio.all_tasks()}
        assert "nimctl-loop-lag" in tasks
        app = harness.app
    assert app.state.nimctl.metrics is not None
    assert "nimctl-loop-lag" not in {t.get_name() for t in asyncio.all_tasks()}
