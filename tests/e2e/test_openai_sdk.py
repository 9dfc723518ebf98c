"""The `openai` SDK against the real server: shapes, streaming, images reaching the model."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.errors import assert_error_shape
from tests.support.media import image_data_url
from tests.support.tiny import TINY_MODEL, sse_events

PROMPT = "What is in this image?"


@pytest.fixture(scope="module")
def client(tiny_server):
    with openai.OpenAI(base_url=f"{tiny_server.base_url}/v1", api_key="not-used") as c:
        yield c


def user_message(*image_urls: str) -> list[dict]:
    parts = [{"type": "text", "text": PROMPT}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in image_urls]
    return [{"role": "user", "content": parts}]


def complete(client, messages, **kwargs):
    return client.chat.completions.create(
        model=TINY_MODEL, messages=messages, max_tokens=8, temperature=0, **kwargs
    )


def test_non_stream_shape(client):
    response = complete(client, [{"role": "user", "content": "Hello"}])
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == TINY_MODEL
    (choice,) = response.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage.completion_tokens <= 8


def test_stream_shape(client):
    stream = complete(
        client,
        [{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in {"stop", "length"} and all(f is None for f in finishes[:-1])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8


def test_stream_ends_with_done(tiny_server):
    response = httpx.post(
        f"{tiny_server.base_url}/v1/chat/completions",
        json={
            "model": TINY_MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "stream": True,
        },
        timeout=60,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse_events(response.text)[-1] == "[DONE]"


def test_images_reach_the_model(client, png_url):
    """Each 64x64 tile costs 7 prompt tokens (4 image tokens and their markers)."""
    text_only = complete(client, user_message()).usage.prompt_tokens
    one = complete(client, user_message(png_url)).usage.prompt_tokens
    two = complete(client, user_message(png_url, image_data_url("JPEG"))).usage.prompt_tokens
    gif = complete(client, user_message(image_data_url("GIF"))).usage.prompt_tokens
    assert one - text_only == 7
    assert two - text_only == 14
    assert gif == one


def test_image_stream(client, png_url):
    chunks = list(complete(client, user_message(png_url), stream=True))
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}


def test_too_many_images_is_400(client, png_url):
    with pytest.raises(openai.BadRequestError) as info:
        complete(client, user_message(*[png_url] * 6))
    assert "takes at most 5 per request (NIM_MAX_IMAGES_PER_PROMPT=5)" in info.value.message
    assert "(rule: max_images_per_prompt)" in info.value.message


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
    error = assert_error_shape(info.value.response.json(), 404)
    assert error["type"] == "NotFoundError" and "`gpt-4o` does not exist" in error["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100_000}, "max_tokens"),
        (
            {"messages": [{"role": "user", "content": "Hi"}], "frobnicate": True},
            "Unsupported parameter(s): 'frobnicate'",
        ),
        ({"messages": "Hi"}, "messages"),
        ({"messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"}, "temperature"),
    ],
)
def test_bad_requests_are_400(tiny_server, body, fragment):
    response = httpx.post(
        f"{tiny_server.base_url}/v1/chat/completions",
        json={"model": TINY_MODEL, **body},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert fragment in assert_error_shape(response.json(), 400)["message"]
