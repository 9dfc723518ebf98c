"""Start-up you can watch: readiness's 503 names the phase and its progress, and the
`nimctl_startup_*` gauges say the same, at every phase the engine reports."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from nimctl.startup import Phase
from tests.support.errors import assert_error_shape

GIB = 2**30


async def ready_message(harness) -> str:
    ready = await harness.client.get("/v1/health/ready")
    assert ready.status_code == 503
    return assert_error_shape(ready.json(), 503)["message"]


async def startup_gauges(harness) -> tuple[str, float | None]:
    """The phase whose gauge is 1, and the progress gauge (None when absent)."""
    text = (await harness.client.get("/v1/metrics")).text
    current, fraction = [], None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "nimctl_startup_phase" and sample.value == 1:
                current.append(sample.labels["phase"])
            elif sample.name == "nimctl_startup_progress":
                fraction = sample.value
    assert len(current) == 1, current
    return current[0], fraction


async def test_each_phase_is_named_by_readiness_and_the_gauges(harness):
    # Before the engine reports anything.
    assert await ready_message(harness) == "Service is not ready: resolving the profile."
    assert await startup_gauges(harness) == ("resolving_profile", None)

    engine = harness.engine
    await engine.report(Phase.DOWNLOADING_WEIGHTS, 0.0, "0.0 of 4.5 GiB (0 %)")
    assert await ready_message(harness) == (
        "Service is not ready: downloading weights, 0.0 of 4.5 GiB (0 %)."
    )
    assert await startup_gauges(harness) == ("downloading_weights", 0.0)

    # Progress within the phase, as the real engine reports a download.
    harness.app.state.nimctl.supervisor.progress.download(
        int(1.2 * GIB), int(4.5 * GIB), bytes_per_s=3.3 * GIB / 40
    )
    assert await ready_message(harness) == (
        "Service is not ready: downloading weights, 1.2 of 4.5 GiB (27 %), about 40 s left."
    )
    phase, fraction = await startup_gauges(harness)
    assert phase == "downloading_weights" and abs(fraction - 1.2 / 4.5) < 1e-9

    await engine.report(Phase.LOADING_WEIGHTS_AND_STARTING_ENGINE)
    assert await ready_message(harness) == (
        "Service is not ready: loading weights and starting the engine."
    )
    assert await startup_gauges(harness) == ("loading_weights_and_starting_engine", None)

    await engine.report(Phase.WARMING_UP)
    assert await ready_message(harness) == "Service is not ready: warming up."
    assert await startup_gauges(harness) == ("warming_up", None)

    await harness.make_ready()
    assert (await harness.client.get("/v1/health/ready")).status_code == 200
    assert await startup_gauges(harness) == ("ready", 1.0)


async def test_chat_while_starting_names_the_phase_too(harness):
    await harness.engine.report(Phase.GENERATING_WEIGHTS)
    chat = await harness.client.post(
        "/v1/chat/completions",
        json={"model": "nimctl/tiny-vlm", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 503
    assert "generating the model" in chat.json()["error"]["message"]


async def test_a_failed_start_keeps_the_phase_it_failed_in(harness):
    await harness.engine.report(Phase.LOADING_WEIGHTS_AND_STARTING_ENGINE)
    harness.engine.fail_start = RuntimeError("no memory for the KV cache")
    harness.engine.release.set()
    supervisor = harness.app.state.nimctl.supervisor
    await asyncio.wait_for(supervisor.fatal.wait(), timeout=5)
    message = await ready_message(harness)
    assert message == ("Service is not ready: engine failed to start: no memory for the KV cache.")
    assert await startup_gauges(harness) == ("loading_weights_and_starting_engine", None)
