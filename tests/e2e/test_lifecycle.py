"""The probes behave as NIM's while the real engine loads, and the card matches the seed."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from nimctl.startup import Phase
from tests.support.errors import assert_error_shape
from tests.support.tiny import TINY_MODEL


def test_live_is_up_before_ready_and_ready_flips_from_503(tiny_server):
    assert tiny_server.live_before_ready
    assert tiny_server.ready_codes_before_200, "ready was 200 at the first poll"
    assert set(tiny_server.ready_codes_before_200) == {503}
    assert tiny_server.seconds_to_live < tiny_server.seconds_to_ready
    print(
        f"\ntime to live {tiny_server.seconds_to_live:.2f} s, "
        f"to ready {tiny_server.seconds_to_ready:.1f} s"
    )


def _phase_of(message: str) -> Phase:
    text = message.removeprefix("Service is not ready: ")
    for phase in sorted(Phase, key=lambda p: -len(p.text)):
        if text.startswith(phase.text):
            return phase
    raise AssertionError(f"no start-up phase named in {message!r}")


def test_readiness_named_the_start_up_phases_in_order(tiny_server):
    phases = [_phase_of(m) for m in tiny_server.ready_messages_before_200]
    order = list(Phase)
    assert phases == sorted(phases, key=order.index), phases
    # Loading takes seconds even for the tiny model: polled five times a second, it is seen.
    assert Phase.LOADING_WEIGHTS_AND_STARTING_ENGINE in phases
    log = tiny_server.log_path.read_text(errors="replace")
    assert "start-up: importing vLLM and configuring the engine" in log
    assert "start-up: loading weights and starting the engine" in log
    assert "start-up: warming up (loading weights and starting the engine took" in log


def test_start_up_gauges_say_ready(tiny_server):
    text = httpx.get(f"{tiny_server.base_url}/v1/metrics").text
    values = {
        (s.name, s.labels.get("phase")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("nimctl_startup_")
    }
    assert values[("nimctl_startup_phase", "ready")] == 1
    assert sum(v for (name, _), v in values.items() if name == "nimctl_startup_phase") == 1
    assert values[("nimctl_startup_progress", None)] == 1


def test_health_bodies(tiny_server):
    live = httpx.get(f"{tiny_server.base_url}/v1/health/live")
    ready = httpx.get(f"{tiny_server.base_url}/v1/health/ready")
    assert live.json() == {"object": "health.response", "message": "Service is live."}
    assert ready.json() == {"object": "health.response", "message": "Service is ready."}


def test_model_card(tiny_server):
    body = httpx.get(f"{tiny_server.base_url}/v1/models").json()
    (card,) = body["data"]
    assert body["object"] == "list"
    assert card["id"] == card["root"] == TINY_MODEL
    assert card["max_model_len"] == 8192
    assert set(card) == {
        "id",
        "object",
        "created",
        "owned_by",
        "root",
        "parent",
        "max_model_len",
        "permission",
    }
    assert card["permission"][0]["object"] == "model_permission"


def test_unknown_route_is_404_in_error_shape(tiny_server):
    response = httpx.get(f"{tiny_server.base_url}/v1/completions/nope")
    assert response.status_code == 404
    assert_error_shape(response.json(), 404)
