"""The seed pages' examples, run against a CPU twin with curl, the OpenAI SDK and LangChain.

A twin's test module imports these tests and names its profile in PROFILE; conftest's
pytest_generate_tests gives them that page's examples.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import httpx
import openai
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI

from tests.support.seeds import LANGCHAIN, SERVED
from tests.support.server import Server
from tests.support.tiny import sse_events

FINISH = {"stop", "length", "tool_calls"}
# Fields the OpenAI SDK sends natively; the rest of a seed body goes through extra_body.
SDK_FIELDS = {"messages", "max_tokens", "stream", "temperature", "reasoning_effort"}


def profile_of(request: Any) -> str:
    return request.module.PROFILE


def curl_chat(server: Server, body: dict[str, Any]) -> str:
    assert shutil.which("curl"), "curl is needed to run the seed pages' requests"
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-N",
            "-X",
            "POST",
            f"{server.base_url}/v1/chat/completions",
            "-H",
            "Accept: application/json",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return result.stdout


def check_completion(out: dict[str, Any], model: str) -> None:
    assert out.get("object") == "chat.completion", out
    assert out["model"] == model
    (choice,) = out["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in FINISH
    usage = out["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def check_stream(text: str, model: str) -> list[dict[str, Any]]:
    events = sse_events(text)
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["model"] == model for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in FINISH
    return chunks


def test_seed_example_with_curl(twin, request, example):
    _, body = example
    model = SERVED[profile_of(request)]
    out = curl_chat(twin, {"model": model, **body})
    if body.get("stream"):
        check_stream(out, model)
    else:
        check_completion(json.loads(out), model)


def test_seed_example_with_openai_sdk(twin, request, example):
    _, body = example
    model = SERVED[profile_of(request)]
    extra = {k: v for k, v in body.items() if k not in SDK_FIELDS}
    kwargs = {k: v for k, v in body.items() if k in SDK_FIELDS}
    with openai.OpenAI(base_url=f"{twin.base_url}/v1", api_key="not-used") as client:
        result = client.chat.completions.create(model=model, extra_body=extra or None, **kwargs)
        if body.get("stream"):
            chunks = list(result)
            assert chunks[-1].choices[0].finish_reason in FINISH
            assert {c.model for c in chunks} == {model}
        else:
            assert result.model == model
            assert result.choices[0].finish_reason in FINISH
            assert result.choices[0].message.role == "assistant"


def test_seed_langchain_example(twin, request):
    model, content, options = LANGCHAIN[profile_of(request)]
    chat = ChatOpenAI(
        model=model, openai_api_base=f"{twin.base_url}/v1", openai_api_key="not-needed", **options
    )
    reply = chat.invoke([HumanMessage(content=content)])
    assert isinstance(reply, AIMessage)
    assert reply.response_metadata["model_name"] == model
    assert reply.usage_metadata is not None and reply.usage_metadata["input_tokens"] > 0


def test_seed_models_and_health(twin, request):
    model = SERVED[profile_of(request)]
    card = httpx.get(f"{twin.base_url}/v1/models").json()["data"][0]
    assert card["id"] == card["root"] == model
    ready = httpx.get(f"{twin.base_url}/v1/health/ready").json()
    assert ready == {"object": "health.response", "message": "Service is ready."}


def chat(server: Server, model: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions", json={"model": model, **body}, timeout=300
    )


def refused(response: httpx.Response, rule: str) -> dict[str, Any]:
    """A guard refusal as the client sees it: 400, the error shape, the rule named."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == 400 and body["error"]["type"] == "BadRequestError"
    assert f"(rule: {rule})" in body["error"]["message"], body["error"]["message"]
    return body["error"]


def forced_tool_calls(
    server: Server,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    choice: Any,
) -> list[dict[str, Any]]:
    """Tool calls that guided decoding forces out of the random model.

    "required" allows any number of calls and a random model may keep adding them until
    max_tokens cuts the JSON; a few seeded samples give one that closes the array.
    """
    outputs = []
    for seed in range(1, 9):
        out = chat(
            server,
            model,
            messages=messages,
            tools=tools,
            tool_choice=choice,
            max_tokens=300,
            temperature=1.0,
            seed=seed,
        ).json()
        calls = out["choices"][0]["message"].get("tool_calls")
        if calls:
            return calls
        outputs.append(out)
    raise AssertionError(f"no complete tool call in 8 seeded samples: {outputs[-1]}")
