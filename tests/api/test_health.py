from __future__ import annotations

import asyncio

from nimctl.lifecycle import State


def assert_error_shape(body: dict, code: int) -> dict:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


async def test_live_answers_while_the_model_loads(harness):
    live = await harness.client.get("/v1/health/live")
    assert live.status_code == 200
    assert live.json() == {"object": "health.response", "message": "Service is live."}
    ready = await harness.client.get("/v1/health/ready")
    assert ready.status_code == 503
    error = assert_error_shape(ready.json(), 503)
    assert error["type"] == "ServiceUnavailableError"
    assert error["message"] == "Service is not ready: resolving the profile."


async def test_ready_after_start(harness):
    await harness.make_ready()
    ready = await harness.client.get("/v1/health/ready")
    assert ready.json() == {"object": "health.response", "message": "Service is ready."}


async def test_engine_death_turns_ready_503_and_sets_fatal(harness):
    await harness.make_ready()
    supervisor = harness.app.state.nimctl.supervisor
    harness.engine.dead = True
    ready = await harness.client.get("/v1/health/ready")
    assert ready.status_code == 503
    assert "engine died" in ready.json()["error"]["message"]
    assert supervisor.state is State.FAILED and supervisor.fatal.is_set()
    live = await harness.client.get("/v1/health/live")
    assert live.status_code == 200


async def test_background_watch_notices_death_without_a_probe(harness):
    await harness.make_ready()
    harness.engine.dead = True
    supervisor = harness.app.state.nimctl.supervisor
    await asyncio.wait_for(supervisor.fatal.wait(), timeout=2)


async def test_failed_start_is_fatal(harness):
    harness.engine.fail_start = RuntimeError("no memory for the KV cache")
    harness.engine.release.set()
    supervisor = harness.app.state.nimctl.supervisor
    await asyncio.wait_for(supervisor.fatal.wait(), timeout=2)
    ready = await harness.client.get("/v1/health/ready")
    assert ready.status_code == 503
    assert "no memory for the KV cache" in ready.json()["error"]["message"]
