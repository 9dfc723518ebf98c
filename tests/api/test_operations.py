"""Request ids, HTTP metrics, API key, body cap, draining and the metadata routes, in-process."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.errors import assert_error_shape

MODEL = "nimctl/tiny-vlm"
HI = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_request_id_is_kept_or_made(harness):
    given = await harness.client.get("/v1/health/live", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await harness.client.get("/v1/health/live")
    assert len(made.headers["x-request-id"]) == 32
    hostile = await harness.client.get("/v1/health/live", headers={"X-Request-Id": "a\tb" * 200})
    assert hostile.headers["x-request-id"] != "a\tb" * 200


async def test_http_requests_are_counted_by_route_and_status(harness):
    await harness.make_ready()
    await harness.client.post("/v1/chat/completions", json=HI)
    await harness.client.post("/v1/chat/completions", json={"messages": "x", "model": "gpt"})
    await harness.client.get("/v1/no-such-route")
    text = (await harness.client.get("/v1/metrics")).text
    counts = samples(text)
    key = "nimctl_http_requests_total"
    chat = (("key", ""), ("method", "POST"), ("route", "/v1/chat/completions"), ("status", "200"))
    assert counts[(key, chat)] == 1
    unmatched = (("key", ""), ("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert counts[(key, unmatched)] == 1
    assert counts[("nimctl_ready", ())] == 1
    assert counts[("nimctl_state", (("state", "ready"),))] == 1
    assert counts[("nimctl_seconds_to_ready", ())] >= 0


async def test_refusals_are_counted_by_rule(harness):
    await harness.make_ready()
    await harness.client.post("/v1/chat/completions", json={**HI, "chat_template": "x"})
    await harness.client.post(
        "/v1/chat/completions",
        json={
            **HI,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                }
            ],
        },
    )
    counts = samples((await harness.client.get("/metrics")).text)
    assert counts[("nimctl_requests_refused_total", (("rule", "no_request_chat_template"),))] == 1
    assert counts[("nimctl_media_failures_total", (("reason", "scheme"),))] == 1


async def test_api_key_guards_all_but_health_and_metrics(make_harness):
    async with make_harness(api_key="s3cret") as h:
        await h.make_ready()
        for path in ("/v1/health/live", "/v1/health/ready", "/v1/metrics", "/metrics"):
            assert (await h.client.get(path)).status_code == 200, path
        for method, path in (
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/metadata"),
            ("GET", "/v1/version"),
        ):
            response = await h.client.request(method, path, json=HI)
            assert response.status_code == 401, path
            assert assert_error_shape(response.json(), 401)["type"] == "AuthenticationError"
            assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = await h.client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert "Invalid API key" in wrong.json()["error"]["message"]
        ok = await h.client.post(
            "/v1/chat/completions", json=HI, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200


async def test_body_cap_by_length_and_by_stream(make_harness):
    async with make_harness(max_request_bytes=1000) as h:
        await h.make_ready()
        big = {**HI, "messages": [{"role": "user", "content": "x" * 2000}]}
        response = await h.client.post("/v1/chat/completions", json=big)
        assert response.status_code == 413
        assert "NIM_MAX_REQUEST_BYTES" in assert_error_shape(response.json(), 413)["message"]

        async def chunks():
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}]}'

        streamed = await h.client.post(
            "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert h.engine.requests == []
        assert (await h.client.post("/v1/chat/completions", json=HI)).status_code == 200


async def test_draining_refuses_new_work(harness):
    await harness.make_ready()
    harness.app.state.nimctl.supervisor.begin_drain()
    ready = await harness.client.get("/v1/health/ready")
    assert ready.status_code == 503 and "shutting down" in ready.json()["error"]["message"]
    chat = await harness.client.post("/v1/chat/completions", json=HI)
    assert chat.status_code == 503
    assert (await harness.client.get("/v1/health/live")).status_code == 200


async def test_version_metadata_manifest(harness):
    await harness.make_ready()
    version = (await harness.client.get("/v1/version")).json()
    assert set(version) == {"release", "api"}
    metadata = (await harness.client.get("/v1/metadata")).json()
    state = harness.app.state.nimctl
    assert metadata["selectedModelProfileId"] == state.profile_id
    assert metadata["modelInfo"][0]["shortName"] == MODEL
    manifest = (await harness.client.get("/v1/manifest")).json()
    assert "name: tiny" in manifest["manifest_file"]
    assert state.profile_id in manifest["manifest_file"]


async def test_license_file_of_the_served_model(harness, tmp_path):
    await harness.make_ready()
    missing = await harness.client.get("/v1/license")
    assert missing.status_code == 404
    assert "Apache-2.0" in assert_error_shape(missing.json(), 404)["message"]
    (tmp_path / "LICENSE").write_text("Some licence text\n")
    harness.engine.model_path = tmp_path
    body = (await harness.client.get("/v1/license")).json()
    assert body["content"] == "Some licence text\n" and body["type"] == "file"
    assert body["size"] == 18 and len(body["sha"]) == 40


@pytest.mark.parametrize("path", ["/v1/metrics", "/metrics"])
async def test_nim_names_appear_even_before_vllm_reports(harness, path):
    """With no vLLM series yet, the scrape still parses and has nimctl's own."""
    text = (await harness.client.get(path)).text
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"nimctl_ready", "nimctl_state", "nimctl_build_info"} <= names
