"""The token routes on the real tiny server: counts that agree with a real chat completion's
usage, a tokenize/detokenize round trip, a rendered prompt with the Idefics3 image tokens, and
the chat guards and media intake in front of the chat forms."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from blake3 import blake3

from tests.support.errors import assert_error_shape
from tests.support.media import image_data_url
from tests.support.tiny import TINY_MODEL, image

QUESTION = "What is in this image?"


def post(server: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=60)


def messages(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": QUESTION}, *parts]}]


def test_tokenize_messages_counts_what_a_chat_completion_uses(tiny_server, png_url):
    chat = messages(image(png_url))
    tokenized = post(tiny_server, "/tokenize", {"model": TINY_MODEL, "messages": chat})
    assert tokenized.status_code == 200, tokenized.text
    body = tokenized.json()
    assert set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["count"] == len(body["tokens"]) and body["token_strs"] is None
    assert body["max_model_len"] == 8192
    completion = post(
        tiny_server,
        "/v1/chat/completions",
        {"model": TINY_MODEL, "messages": chat, "max_tokens": 1},
    )
    assert completion.status_code == 200, completion.text
    assert body["count"] == completion.json()["usage"]["prompt_tokens"]
    text_only = post(tiny_server, "/tokenize", {"messages": messages()}).json()
    assert body["count"] > text_only["count"]  # the image's tokens are counted


def test_tokenize_prompt_and_detokenize_round_trip(tiny_server):
    text = "a red square on a white page"
    tokenized = post(
        tiny_server,
        "/tokenize",
        {"prompt": text, "add_special_tokens": False, "return_token_strs": True},
    )
    assert tokenized.status_code == 200, tokenized.text
    body = tokenized.json()
    assert body["count"] == len(body["tokens"]) == len(body["token_strs"]) > 0
    detokenized = post(tiny_server, "/detokenize", {"model": TINY_MODEL, "tokens": body["tokens"]})
    assert detokenized.status_code == 200, detokenized.text
    assert detokenized.json() == {"prompt": text}


def test_render_shows_the_prompt_with_the_image_tokens(tiny_server, png_url):
    response = post(
        tiny_server,
        "/v1/chat/completions/render",
        {"model": TINY_MODEL, "messages": messages(image(png_url)), "mm_payload": "none"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert QUESTION in body["prompt"]
    # The template's one <image> becomes the processor's tiles, each wrapped and full of
    # <image> tokens; the features say where they are.
    assert "<fake_token_around_image>" in body["prompt"] and "<global-img>" in body["prompt"]
    assert body["prompt"].count("<image>") > 1
    (placeholder,) = body["features"]["mm_placeholders"]["image"]
    assert placeholder["offset"] + placeholder["length"] <= len(body["token_ids"])
    assert body["features"]["kwargs_data"] is None  # mm_payload "none"
    # The intake keyed the image by its encoded bytes, with the engine's own hash (blake3).
    encoded = base64.b64decode(png_url.split(",", 1)[1])
    assert body["features"]["mm_hashes"]["image"] == [f"blake3:{blake3(encoded).hexdigest()}"]
    tokenized = post(tiny_server, "/tokenize", {"messages": messages(image(png_url))}).json()
    assert body["token_ids"] == tokenized["tokens"]
    assert body["model"] == TINY_MODEL and "max_tokens" in body["sampling_params"]


SIX = messages(*[image(image_data_url("PNG"))] * 6)


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "fragment"),
    [
        ("/tokenize", {"messages": SIX}, 400, "messages[0].content[6]", "max_images_per_prompt"),
        (
            "/v1/chat/completions/render",
            {"messages": SIX},
            400,
            "messages[0].content[6]",
            "max_images_per_prompt",
        ),
        (
            "/tokenize",
            {"messages": messages(image("http://10.0.0.1/x.png"))},
            400,
            "messages[0].content[1]",
            "blocked_address",
        ),
        (
            "/tokenize",
            {"messages": messages(image("data:image/png;base64,AAAA"))},
            400,
            "messages[0].content[1]",
            "not_an_image",
        ),
        ("/tokenize", {"prompt": "hi", "add_special_tokens": "yes"}, 400, "add_special_tokens", ""),
        ("/tokenize", {"prompt": "hi", "messages": messages()}, 400, "messages", "not both"),
        ("/tokenize", {"model": TINY_MODEL}, 400, "prompt", "`messages`"),
        ("/detokenize", {"tokens": [10**12]}, 400, "tokens", "out of vocabulary"),
        ("/detokenize", {"tokens": [-1]}, 400, "tokens[0]", ""),
        ("/detokenize", {"tokens": [1.5]}, 400, "tokens[0]", "integer"),
        ("/detokenize", {"model": "other", "tokens": [1]}, 404, "model", ""),
        ("/v1/chat/completions/render", {"messages": messages(), "n": "2"}, 400, "n", "integer"),
    ],
    ids=[
        "too-many-images",
        "render-too-many-images",
        "private-image-url",
        "not-an-image",
        "add-special-tokens-type",
        "prompt-and-messages",
        "neither",
        "out-of-vocabulary",
        "negative",
        "not-an-integer",
        "other-model",
        "render-strict",
    ],
)
def test_bad_requests_are_4xx(tiny_server, path, body, status, param, fragment):
    response = post(tiny_server, path, body)
    assert response.status_code == status, response.text
    error = assert_error_shape(response.json(), status)
    if param is not None:
        assert error["param"] == param, error
    assert fragment in error["message"], error
