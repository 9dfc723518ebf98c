from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.errors import assert_error_shape

MODEL = "nimctl/tiny-vlm"
CARD_KEYS = {"id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"}
PERMISSION_KEYS = {
    "id",
    "object",
    "created",
    "allow_create_engine",
    "allow_sampling",
    "allow_logprobs",
    "allow_search_indices",
    "allow_view",
    "allow_fine_tuning",
    "organization",
    "group",
    "is_blocking",
}


async def test_models_card_matches_the_seed_reference(harness):
    await harness.make_ready()
    body = (await harness.client.get("/v1/models")).json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert set(card) == CARD_KEYS
    assert card["id"] == card["root"] == MODEL
    assert card["object"] == "model" and card["owned_by"] == "system" and card["parent"] is None
    assert card["max_model_len"] == 4096
    (permission,) = card["permission"]
    assert set(permission) == PERMISSION_KEYS
    assert permission["id"].startswith("modelperm-")
    assert permission["object"] == "model_permission"


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions"])
async def test_model_routes_are_503_until_ready(harness, path):
    if path.endswith("completions"):
        response = await harness.client.post(path, json={"messages": []})
    else:
        response = await harness.client.get(path)
    assert response.status_code == 503
    assert_error_shape(response.json(), 503)


async def test_chat_non_stream(harness):
    await harness.make_ready()
    response = await harness.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["choices"][0]["message"]["content"] == "test_0 test_1"


async def test_chat_stream_is_sse(harness):
    await harness.make_ready()
    response = await harness.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert [
        json.loads(e.removeprefix("data: "))["choices"][0]["delta"]["content"] for e in events[:-1]
    ] == ["test_0", "test_1", "test_2"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"", 400, "empty"),
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object, not list"),
        (b"\xff\xfe{}", 400, "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        (b'{"model": "nimctl/tiny-vlm"}', 400, "messages"),
        (b'{"model": "gpt-4", "messages": []}', 404, "`gpt-4` does not exist"),
    ],
)
async def test_bad_requests_get_4xx_in_the_error_shape(harness, body, status, fragment):
    await harness.make_ready()
    response = await harness.client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert fragment in assert_error_shape(response.json(), status)["message"]
    assert harness.engine.requests == []


async def test_unknown_route_and_method_use_the_error_shape(harness):
    response = await harness.client.get("/v1/nope")
    assert response.status_code == 404
    assert assert_error_shape(response.json(), 404)["type"] == "NotFoundError"
    response = await harness.client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert assert_error_shape(response.json(), 405)["type"] == "MethodNotAllowedError"


@pytest.mark.parametrize("path", ["/v1/metrics", "/metrics"])
async def test_metrics_are_prometheus_text(harness, path):
    response = await harness.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert "vllm:prompt_tokens" in names


@pytest.mark.parametrize(
    ("extra", "rule"),
    [
        ({"chat_template": "{{ x }}"}, "no_request_chat_template"),
        ({"tool_choice": "auto"}, "tool_choice_needs_tools"),
        ({"reasoning_effort": "high"}, "reasoning_effort_values"),
    ],
)
async def test_guard_refusals_never_reach_the_engine(harness, extra, rule):
    await harness.make_ready()
    response = await harness.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra},
    )
    assert response.status_code == 400
    assert f"(rule: {rule})" in assert_error_shape(response.json(), 400)["message"]
    assert harness.engine.requests == []


async def test_openapi_describes_the_chat_request_and_error_shape(harness):
    """The published contract must admit every request of the seed pages (as the fuzzer and
    client generators read it) and name the error shape of every refusal."""
    import jsonschema

    from tests.support.seeds import EXAMPLES

    document = (await harness.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    request_schema = schemas["ChatCompletionRequest"]
    assert request_schema["properties"]["model"] == {"enum": [MODEL]}
    request_schema["properties"]["model"] = {"type": "string"}
    checked = 0
    for examples in EXAMPLES.values():
        for _name, body in examples:
            jsonschema.validate({"model": "any", **body}, request_schema)
            checked += 1
    assert checked >= 20
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": MODEL, "messages": []}, request_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"model": MODEL, "messages": [{"role": "user", "content": 3}]}, request_schema
        )
    responses = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for code in ("400", "401", "404", "408", "413", "431", "503"):
        assert responses[code]["content"]["application/json"]["schema"] == error_ref
    refusal = (await harness.client.post("/v1/chat/completions", content=b"{")).json()
    jsonschema.validate(refusal, schemas["ErrorResponse"])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
        ({"stream": 1}, "stream"),
        ({"max_tokens": 2.0}, "max_tokens"),
        ({"temperature": "0.5"}, "temperature"),
    ],
)
async def test_scalars_are_refused_not_coerced_at_any_depth(harness, extra, param):
    await harness.make_ready()
    response = await harness.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra},
    )
    assert response.status_code == 400
    error = assert_error_shape(response.json(), 400)
    assert error["param"] == param
    assert "must be" in error["message"]
    assert harness.engine.requests == []
