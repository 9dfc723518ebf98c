"""Qwen3.5-397B-A17B's page and rules on its CPU twin."""

from __future__ import annotations

import json

from tests.e2e.seed_checks import (  # noqa: F401  (collected here, run against this twin)
    chat,
    check_stream,
    forced_tool_calls,
    refused,
    test_seed_example_with_curl,
    test_seed_example_with_openai_sdk,
    test_seed_langchain_example,
    test_seed_models_and_health,
)
from tests.e2e.seeds import BOARDWALK_JPG, QWEN, image_question
from tests.e2e.test_twin_mistral_large3 import TOOLS
from tests.support.media import video_data_url

PROFILE = "qwen3.5-397b-a17b-tiny"
HI = [{"role": "user", "content": "Hello"}]
OFF = {"enable_thinking": False}


def test_reasoning_on_by_default(twin):
    """The prompt ends inside <think> (the template's default), so the qwen3 parser reads all
    output up to a </think> as reasoning; the random model never closes it in 8 greedy tokens."""
    out = chat(twin, QWEN, messages=HI, max_tokens=8, temperature=0, return_prompt_text=True).json()
    message = out["choices"][0]["message"]
    assert message["reasoning"] and message["content"] is None
    assert out["prompt_text"].endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n")


def test_enable_thinking_false_turns_it_off(twin):
    out = chat(
        twin,
        QWEN,
        messages=HI,
        max_tokens=8,
        temperature=0,
        chat_template_kwargs=OFF,
        return_prompt_text=True,
    ).json()
    message = out["choices"][0]["message"]
    assert message["content"] and message["reasoning"] is None
    assert out["prompt_text"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_reasoning_effort_none_turns_it_off(twin):
    """vLLM maps reasoning_effort none to enable_thinking false for this template."""
    out = chat(
        twin,
        QWEN,
        messages=HI,
        max_tokens=8,
        temperature=0,
        reasoning_effort="none",
        return_prompt_text=True,
    ).json()
    assert out["choices"][0]["message"]["reasoning"] is None
    assert out["prompt_text"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_streamed_reasoning_arrives_in_delta_reasoning(twin):
    response = chat(twin, QWEN, messages=HI, max_tokens=8, temperature=0, stream=True)
    chunks = check_stream(response.text, QWEN)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert any(d.get("reasoning") for d in deltas)
    assert not any(d.get("content") for d in deltas)


def test_include_reasoning_false(twin):
    out = chat(twin, QWEN, messages=HI, max_tokens=8, temperature=0, include_reasoning=False).json()
    assert out["choices"][0]["message"]["reasoning"] is None
    assert out["usage"]["completion_tokens"] == 8  # the model still reasoned
    error = refused(
        chat(twin, QWEN, messages=HI, include_reasoning=False, stream=True),
        "include_reasoning_not_streamed",
    )
    assert error["param"] == "include_reasoning"


def test_only_enable_thinking_in_chat_template_kwargs(twin):
    refused(
        chat(twin, QWEN, messages=HI, chat_template_kwargs={"thinking": False}),
        "known_chat_template_kwargs",
    )


def test_video_is_off_until_enabled(twin):
    video = [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": video_data_url()}},
                {"type": "text", "text": "What is in this video?"},
            ],
        }
    ]
    error = refused(chat(twin, QWEN, messages=video, max_tokens=4), "max_videos_per_prompt")
    assert "Set NIM_MAX_VIDEOS_PER_PROMPT=1" in error["message"]


def test_media_io_kwargs_need_a_video(twin):
    refused(
        chat(
            twin,
            QWEN,
            messages=image_question(BOARDWALK_JPG),
            media_io_kwargs={"video": {"fps": 1.0}},
        ),
        "media_io_kwargs",
    )


def test_mm_processor_kwargs_are_bounded(twin):
    refused(
        chat(
            twin,
            QWEN,
            messages=image_question(BOARDWALK_JPG),
            mm_processor_kwargs={"size": {"longest_edge": 10**9}},
        ),
        "mm_processor_kwargs",
    )


def test_mm_processor_kwargs_sizes_change_image_tokens(twin):
    """One token a 32 x 32 patch: a 1024-pixel ceiling leaves one, the default budget more."""
    question = image_question(BOARDWALK_JPG)

    def prompt_tokens(**body) -> int:
        response = chat(twin, QWEN, messages=question, max_tokens=1, temperature=0, **body)
        assert response.status_code == 200, response.text
        return response.json()["usage"]["prompt_tokens"]

    default = prompt_tokens()
    tight = prompt_tokens(
        mm_processor_kwargs={"size": {"shortest_edge": 256, "longest_edge": 1024}}
    )
    roomy = prompt_tokens(
        mm_processor_kwargs={"size": {"shortest_edge": 65536, "longest_edge": 262144}}
    )
    assert tight < default < roomy


def test_five_images_pass_six_do_not(twin):
    five = image_question(BOARDWALK_JPG)
    five[0]["content"] += [five[0]["content"][1]] * 4
    assert chat(twin, QWEN, messages=five, max_tokens=2).status_code == 200
    six = image_question(BOARDWALK_JPG)
    six[0]["content"] += [six[0]["content"][1]] * 5
    refused(chat(twin, QWEN, messages=six, max_tokens=2), "max_images_per_prompt")


def test_tool_calls_with_every_tool_choice(twin):
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        calls = forced_tool_calls(twin, QWEN, weather, TOOLS, choice)
        assert calls[0]["function"]["name"] == "get_weather"
        assert isinstance(json.loads(calls[0]["function"]["arguments"]), dict)
    for choice in ("auto", "none"):
        assert (
            chat(
                twin, QWEN, messages=weather, tools=TOOLS, tool_choice=choice, max_tokens=8
            ).status_code
            == 200
        )
    refused(
        chat(
            twin,
            QWEN,
            messages=weather,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "book_flight"}},
        ),
        "named_tool_exists",
    )
