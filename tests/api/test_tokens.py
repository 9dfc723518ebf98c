"""The token routes in-process, on the fake engine: what stands in front of the engine (ready,
model, body parsing, the tokenize form, guards, media intake, the API key) and the OpenAPI
contract. What vLLM answers is tested end to end (tests/e2e/test_tokens.py)."""

from __future__ import annotations

import pytest

from tests.support.errors import assert_error_shape
from tests.support.fake_engine import FAKE_BOS, FAKE_IMAGE
from tests.support.media import image_data_url

MODEL = "nimctl/tiny-vlm"
ROUTES = ("/tokenize", "/detokenize", "/v1/chat/completions/render")
HI = [{"role": "user", "content": "hi"}]


def image(url: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.mark.parametrize("path", ROUTES)
async def test_routes_are_503_until_ready(harness, path):
    response = await harness.client.post(path, json={"prompt": "hi"})
    assert response.status_code == 503
    assert "not ready" in assert_error_shape(response.json(), 503)["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tokenize", {"model": "gpt-4", "prompt": 3}),
        ("/tokenize", {"model": "gpt-4", "messages": "bad"}),
        ("/detokenize", {"model": "gpt-4", "tokens": [-1]}),
        ("/v1/chat/completions/render", {"model": "gpt-4"}),
    ],
)
async def test_another_model_is_404_before_anything_else(harness, path, body):
    await harness.make_ready()
    response = await harness.client.post(path, json=body)
    assert response.status_code == 404
    assert assert_error_shape(response.json(), 404)["param"] == "model"
    assert harness.engine.requests == []


async def test_tokenize_prompt(harness):
    await harness.make_ready()
    response = await harness.client.post("/tokenize", json={"model": MODEL, "prompt": "ab"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "count": 3,
        "max_model_len": 4096,
        "tokens": [FAKE_BOS, ord("a"), ord("b")],
        "token_strs": None,
    }
    plain = await harness.client.post(
        "/tokenize", json={"prompt": "ab", "add_special_tokens": False}
    )
    assert plain.json()["tokens"] == [ord("a"), ord("b")]


async def test_tokenize_messages_goes_through_guards_and_intake(harness):
    await harness.make_ready()
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "x"}, image(image_data_url())]}
    ]
    response = await harness.client.post("/tokenize", json={"messages": messages})
    assert response.status_code == 200, response.text
    (seen,) = harness.engine.requests
    assert seen["messages"][0]["content"][1]["type"] == "image_pil"  # decoded by the intake
    assert bytes(response.json()["tokens"]).decode() == f"user: x{FAKE_IMAGE}\nassistant:"


async def test_render_returns_the_prompt(harness):
    await harness.make_ready()
    response = await harness.client.post(
        "/v1/chat/completions/render", json={"model": MODEL, "messages": HI, "max_tokens": 5}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prompt"] == "user: hi\nassistant:"
    assert bytes(body["token_ids"]).decode() == body["prompt"]


async def test_detokenize_round_trip(harness):
    await harness.make_ready()
    tokens = (await harness.client.post("/tokenize", json={"prompt": "héllo"})).json()["tokens"]
    response = await harness.client.post("/detokenize", json={"tokens": tokens[1:]})
    assert response.status_code == 200
    assert response.json() == {"prompt": "héllo"}


@pytest.mark.parametrize(
    ("path", "body", "param", "fragment"),
    [
        ("/tokenize", b"", None, "empty"),
        ("/tokenize", b"[1]", None, "JSON object"),
        ("/tokenize", b'{"prompt": NaN}', None, "NaN"),
        ("/tokenize", {}, "prompt", "`prompt`"),
        ("/tokenize", {"model": MODEL}, "prompt", "`messages`"),
        ("/tokenize", {"prompt": "a", "messages": HI}, "messages", "not both"),
        ("/tokenize", {"prompt": 3}, "prompt", "string"),
        ("/tokenize", {"prompt": None}, "prompt", "string"),
        ("/tokenize", {"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens", "true"),
        ("/tokenize", {"prompt": "a", "add_special_tokens": 1}, "add_special_tokens", "true"),
        ("/tokenize", {"prompt": "a", "return_token_strs": 0}, "return_token_strs", "true"),
        ("/tokenize", {"prompt": "a", "temperature": 1}, "temperature", "Unsupported"),
        ("/tokenize", {"messages": []}, "messages", "non-empty"),
        ("/tokenize", {"messages": HI, "add_special_tokens": "no"}, "add_special_tokens", "true"),
        ("/tokenize", {"messages": HI, "max_tokens": 3}, "max_tokens", "Unsupported"),
        ("/detokenize", {}, "tokens", "Field required"),
        ("/detokenize", {"tokens": "1 2"}, "tokens", "list"),
        ("/detokenize", {"tokens": [1, -1]}, "tokens[1]", "greater than or equal"),
        ("/detokenize", {"tokens": [2**64]}, "tokens[0]", "less than or equal"),
        ("/detokenize", {"tokens": [2**200]}, "tokens[0]", ""),
        ("/detokenize", {"tokens": [256]}, "tokens", "vocabulary"),
        ("/detokenize", {"tokens": [1.0]}, "tokens[0]", "integer"),
        ("/detokenize", {"tokens": ["1"]}, "tokens[0]", "integer"),
        ("/detokenize", {"tokens": [True]}, "tokens[0]", "integer"),
        ("/v1/chat/completions/render", {}, "messages", "no messages"),
        ("/v1/chat/completions/render", {"messages": HI, "max_tokens": "2"}, "max_tokens", "int"),
    ],
)
async def test_bad_requests_are_400_in_the_error_shape(harness, path, body, param, fragment):
    await harness.make_ready()
    if isinstance(body, bytes):
        response = await harness.client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await harness.client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = assert_error_shape(response.json(), 400)
    assert error["param"] == param
    assert fragment in error["message"]


@pytest.mark.parametrize("path", ["/tokenize", "/v1/chat/completions/render"])
async def test_chat_forms_meet_the_guards_and_the_media_intake(harness, path):
    await harness.make_ready()
    six = [{"role": "user", "content": [image(image_data_url())] * 6}]
    response = await harness.client.post(path, json={"messages": six})
    assert "(rule: max_images_per_prompt)" in assert_error_shape(response.json(), 400)["message"]
    private = [{"role": "user", "content": [image("http://10.0.0.1/x.png")]}]
    response = await harness.client.post(path, json={"messages": private})
    assert response.status_code == 400
    assert assert_error_shape(response.json(), 400)["param"].startswith("messages")
    template = {"messages": HI, "chat_template": "{{ x }}"}
    response = await harness.client.post(path, json=template)
    assert "(rule: no_request_chat_template)" in assert_error_shape(response.json(), 400)["message"]
    assert harness.engine.requests == []


@pytest.mark.parametrize("path", ROUTES)
async def test_routes_need_the_api_key(make_harness, path):
    async with make_harness(api_key="s3cret") as h:
        await h.make_ready()
        body = {"prompt": "a", "tokens": [1], "messages": HI}
        refused = await h.client.post(path, json=body)
        assert refused.status_code == 401
        assert_error_shape(refused.json(), 401)
        ok = {"/tokenize": {"prompt": "a"}, "/detokenize": {"tokens": [97]}}.get(
            path, {"messages": HI}
        )
        answered = await h.client.post(path, json=ok, headers={"Authorization": "Bearer s3cret"})
        assert answered.status_code == 200, answered.text


async def test_openapi_describes_the_token_routes(harness):
    import jsonschema

    document = (await harness.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, request, response in (
        ("/tokenize", "TokenizeRequest", "TokenizeResponse"),
        ("/detokenize", "DetokenizeRequest", "DetokenizeResponse"),
        ("/v1/chat/completions/render", "ChatCompletionRequest", "ChatRenderResponse"),
    ):
        operation = document["paths"][path]["post"]
        body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body_schema == {"$ref": f"#/components/schemas/{request}"}
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{response}"}
        for code in ("400", "401", "404", "503"):
            assert (
                operation["responses"][code]["content"]["application/json"]["schema"] == error_ref
            )
    tokenize = schemas["TokenizeRequest"]
    jsonschema.validate({"model": MODEL, "prompt": "hi"}, tokenize)
    jsonschema.validate({"messages": HI, "add_generation_prompt": False}, tokenize)
    for bad in ({"prompt": "hi", "messages": HI}, {}, {"prompt": 3}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, tokenize)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tokens": [-1]}, schemas["DetokenizeRequest"])
    await harness.make_ready()
    for path, body, name in (
        ("/tokenize", {"prompt": "hi", "return_token_strs": True}, "TokenizeResponse"),
        ("/detokenize", {"tokens": [104, 105]}, "DetokenizeResponse"),
        ("/v1/chat/completions/render", {"messages": HI}, "ChatRenderResponse"),
    ):
        answer = (await harness.client.post(path, json=body)).json()
        jsonschema.validate(answer, schemas[name])
