"""Bad input beyond media (the media corpus is in tests/e2e/test_media.py): malformed JSON,
wrong types, absurd sizes, values out of range, unknown fields, invalid UTF-8, deep nesting.

Each gets a 4xx in the error shape with a message that says what is wrong, the engine never
sees it (its prompt-token counter does not move), and the server keeps serving.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.errors import assert_error_shape
from tests.support.tiny import TINY_MODEL
from tests.support.waiting import metric

USER = [{"role": "user", "content": "Hello"}]


def body(**fields: Any) -> bytes:
    return json.dumps({"model": TINY_MODEL, "messages": USER, "max_tokens": 4, **fields}).encode()


# (case, raw request body, a fragment the message must contain, case-insensitive)
CASES: list[tuple[str, bytes, str]] = [
    # malformed JSON and wrong top-level types
    ("empty body", b"", "empty"),
    ("truncated json", b'{"model": "x", "messages": [', "not valid json"),
    ("trailing garbage", body() + b" {}", "not valid json"),
    ("json array", b"[1, 2, 3]", "json object"),
    ("json string", b'"hello"', "json object"),
    ("json null", b"null", "json object"),
    ("single quotes", b"{'model': 'x'}", "not valid json"),
    ("NaN literal", body().replace(b'"max_tokens": 4', b'"temperature": NaN'), "nan"),
    ("Infinity literal", body().replace(b'"max_tokens": 4', b'"max_tokens": Infinity'), "infinity"),
    # encoding
    ("invalid utf-8", body().replace(b"Hello", b"Hel\xff\xfelo"), "utf-8"),
    ("utf-16 body", body().decode().encode("utf-16"), "utf-8"),
    ("lone surrogate escape", body().replace(b"Hello", b"\\ud800"), "surrogate"),
    # deep nesting
    ("nested 100000 deep", b"[" * 100_000 + b"]" * 100_000, "nested"),
    (
        "nested content",
        json.dumps(
            {"model": TINY_MODEL, "messages": [{"role": "user", "content": [[[[["x"]]]]]}]}
        ).encode(),
        "messages[0].content[0]",
    ),
    # wrong types
    ("messages not a list", body(messages="hello"), "messages"),
    ("messages an object", body(messages={"role": "user"}), "messages"),
    ("message a string", body(messages=["hello"]), "messages"),
    ("no messages", json.dumps({"model": TINY_MODEL}).encode(), "messages"),
    ("empty messages", body(messages=[]), "messages"),
    ("role a number", body(messages=[{"role": 7, "content": "x"}]), "role"),
    ("content a number", body(messages=[{"role": "user", "content": 42}]), "content"),
    ("model a number", body(model=42), "model"),
    ("max_tokens a string", body(max_tokens="ten"), "max_tokens"),
    ("temperature a string", body(temperature="hot"), "temperature"),
    ("stream a string", body(stream="yes"), "stream"),
    ("n a float", body(n=1.5), "n"),
    ("stop a number", body(stop=5), "stop"),
    ("tools an object", body(tools={"type": "function"}), "tools"),
    ("tool_choice a number", body(tool_choice=5), "tool_choice"),
    # out of range
    ("n zero", body(n=0), "n"),
    ("n negative", body(n=-1), "n"),
    ("n absurd", body(n=10**9), "n"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens"),
    ("max_tokens negative", body(max_tokens=-5), "max_tokens"),
    ("max_tokens beyond the context", body(max_tokens=10**12), "max_tokens"),
    ("temperature negative", body(temperature=-1), "temperature"),
    ("temperature huge", body(temperature=1e308), "temperature"),
    ("top_p zero", body(top_p=0), "top_p"),
    ("top_p above one", body(top_p=1.5), "top_p"),
    ("top_logprobs too many", body(logprobs=True, top_logprobs=10_000), "logprobs"),
    ("presence_penalty out of range", body(presence_penalty=5), "presence_penalty"),
    ("seed beyond 64 bits", body(seed=2**70), "seed"),
    ("logit_bias token outside the vocabulary", body(logit_bias={"99999999": 5}), "logit_bias"),
    ("logit_bias key not a token", body(logit_bias={"abc": 5}), "logit_bias"),
    ("min_tokens above max_tokens", body(min_tokens=10, max_tokens=2), "min_tokens"),
    # found by the fuzzer (each was a 500): vLLM's own validators, lazily checked parts
    ("stream_options without stream", body(stream_options={"include_usage": True}), "stream"),
    ("empty tools", body(tools=[]), "tools"),
    (
        "tool_calls a number",
        body(messages=[*USER, {"role": "assistant", "tool_calls": -3891}, *USER]),
        "tool_calls",
    ),
    ("content part without type", body(messages=[{"role": "user", "content": [{"": []}]}]), "type"),
    ("max_tokens a float", body(max_tokens=2.0), "max_tokens"),
    # unknown fields are refused, not dropped
    ("unknown field", body(frobnicate=True), "frobnicate"),
    ("misspelt field", body(max_token=5), "max_token"),
    # absurd sizes
    (
        "1 MB of text in one message",
        body(messages=[{"role": "user", "content": "x " * 2**19}]),
        "context",
    ),
    (
        "10,000 messages",
        body(
            messages=[
                {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"}
                for i in range(10_001)
            ]
        ),
        "context",
    ),
    ("100,000 stop strings", body(stop=[f"s{i}" for i in range(100_000)]), "stop"),
]


@pytest.fixture(scope="module")
def refused() -> dict[str, int]:
    """Status by case, for the figures: filled by the cases that passed."""
    return {}


@pytest.mark.parametrize(("name", "raw", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx(tiny_server, refused, name, raw, fragment):
    before = metric(tiny_server, "vllm:prompt_tokens_total")
    response = httpx.post(
        f"{tiny_server.base_url}/v1/chat/completions",
        content=raw,
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    error = assert_error_shape(response.json(), response.status_code)
    assert fragment.lower() in error["message"].lower() + str(error["param"]).lower(), error
    assert metric(tiny_server, "vllm:prompt_tokens_total") == before, "it reached the engine"
    refused[name] = response.status_code


def test_still_serving_after_the_bad_input(tiny_server, refused, figures):
    response = httpx.post(f"{tiny_server.base_url}/v1/chat/completions", content=body(), timeout=60)
    assert response.status_code == 200, response.text
    assert httpx.get(f"{tiny_server.base_url}/v1/health/ready").status_code == 200
    statuses = sorted(set(refused.values()))
    figures.record("bad_input", cases=len(CASES), clear_4xx=len(refused), statuses=statuses)
