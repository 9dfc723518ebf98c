"""Llama 3.1 Nemotron Nano VL 8B's page and rules on its CPU twin, on the real architecture."""

from __future__ import annotations

import pytest

from tests.e2e.seed_checks import (  # noqa: F401  (collected here, run against this twin)
    chat,
    refused,
    test_seed_example_with_curl,
    test_seed_example_with_openai_sdk,
    test_seed_langchain_example,
    test_seed_models_and_health,
)
from tests.e2e.seeds import FP16_QUESTION, NEMOTRON, NEMOTRON_IMAGE_FIRST, SPECIFICATIONS_PNG, TOOLS
from tests.support.media import image_data_url

# Real-architecture twins run in `make test-twins` (see the Makefile), not `make test`.
pytestmark = pytest.mark.real_twin


def tokens_and_prompt(response) -> tuple[int, str]:
    assert response.status_code == 200, response.text
    out = response.json()
    return out["usage"]["prompt_tokens"], out["prompt_text"]


PROFILE = "llama-3.1-nemotron-nano-vl-8b-v1-tiny"


def test_img_tag_becomes_the_same_image_part(twin):
    as_part = tokens_and_prompt(
        chat(twin, NEMOTRON, messages=NEMOTRON_IMAGE_FIRST, max_tokens=1, return_prompt_text=True)
    )
    as_tag = tokens_and_prompt(
        chat(
            twin,
            NEMOTRON,
            max_tokens=1,
            return_prompt_text=True,
            messages=[
                {"role": "user", "content": f'<img src="{SPECIFICATIONS_PNG}" /> {FP16_QUESTION}'}
            ],
        )
    )
    assert as_tag == as_part
    assert "<img" not in as_tag[1]


def test_images_are_put_before_text(twin):
    text_first = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": FP16_QUESTION},
                {"type": "image_url", "image_url": {"url": SPECIFICATIONS_PNG}},
            ],
        }
    ]
    _, prompt = tokens_and_prompt(
        chat(twin, NEMOTRON, messages=text_first, max_tokens=1, return_prompt_text=True)
    )
    assert prompt.index("<image>") < prompt.index("How many times")


def test_gif_is_refused(twin):
    gif = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_url("GIF")}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]
    error = refused(chat(twin, NEMOTRON, messages=gif), "image_formats")
    assert "accepts JPEG, PNG" in error["message"]
    assert error["param"] == "messages[0].content[0]"


def test_four_images_pass_five_do_not(twin):
    part = NEMOTRON_IMAGE_FIRST[0]["content"][0]
    four = [{"role": "user", "content": [part] * 4 + [{"type": "text", "text": "Compare"}]}]
    assert chat(twin, NEMOTRON, messages=four, max_tokens=1).status_code == 200
    five = [{"role": "user", "content": [part] * 5 + [{"type": "text", "text": "Compare"}]}]
    error = refused(chat(twin, NEMOTRON, messages=five), "max_images_per_prompt")
    assert "NIM_MAX_IMAGES_PER_PROMPT=4" in error["message"]


def test_no_tools_and_no_reasoning_effort(twin):
    hi = [{"role": "user", "content": "Hi"}]
    refused(chat(twin, NEMOTRON, messages=hi, tools=TOOLS), "tools_supported")
    refused(chat(twin, NEMOTRON, messages=hi, reasoning_effort="high"), "reasoning_effort_values")
