"""Qwen3.5-397B-A17B's page and rules on its CPU twin, video included.

One server for the module, started as the Qwen3.5 page says to take video
(NIM_MAX_VIDEOS_PER_PROMPT=1); that video is refused until then is checked on the same profile in
tests/unit/test_guards.py. The twin's processor turns each pair of frames (temporal patch 2) of
a 64 x 48 video into 4 tokens plus a `<t seconds>` timestamp and the vision markers, so the
prompt's token count tells how many frames reached the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.image_server import ImageServer
from tests.support.media import video_bytes, video_data_url
from tests.support.seed_checks import (  # noqa: F401  (collected here, run against this twin)
    chat,
    check_stream,
    forced_tool_calls,
    refused,
    test_seed_example_with_curl,
    test_seed_example_with_openai_sdk,
    test_seed_langchain_example,
    test_seed_models_and_health,
)
from tests.support.seeds import BOARDWALK_JPG, QWEN, TOOLS, image_question

# Real-architecture twins run in `make test-twins` (see the Makefile), not `make test`.
pytestmark = pytest.mark.real_twin
PROFILE = "qwen3.5-397b-a17b-tiny"
ENV = {"NIM_MAX_VIDEOS_PER_PROMPT": "1", "NIM_MEDIA_ALLOWLIST": "127.0.0.1"}
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
    default = prompt_tokens(twin, question)
    tight = {"size": {"shortest_edge": 256, "longest_edge": 1024}}
    roomy = {"size": {"shortest_edge": 65536, "longest_edge": 262144}}
    smaller = prompt_tokens(twin, question, mm_processor_kwargs=tight)
    larger = prompt_tokens(twin, question, mm_processor_kwargs=roomy)
    assert smaller < default < larger


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


# --- video ---------------------------------------------------------------------------------

CLIP = video_data_url(frames=25, fps=10.0)  # 2.5 s


def video_question(url: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "text", "text": "What is in this video?"},
            ],
        }
    ]


def prompt_tokens(twin, messages: list[dict], **body) -> int:
    response = chat(twin, QWEN, messages=messages, max_tokens=1, temperature=0, **body)
    assert response.status_code == 200, response.text
    return response.json()["usage"]["prompt_tokens"]


@pytest.fixture(scope="module")
def clip_server() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.route("/clip.mp4", video_bytes(frames=25, fps=10.0), content_type="video/mp4")
        yield server


def test_a_video_reaches_the_model_by_base64_and_by_url(twin, clip_server):
    text_only = prompt_tokens(twin, [{"role": "user", "content": "What is in this video?"}])
    by_data = prompt_tokens(twin, video_question(CLIP))
    by_url = prompt_tokens(twin, video_question(clip_server.url("/clip.mp4")))
    assert by_data > text_only + 4
    assert by_url == by_data
    assert clip_server.count("/clip.mp4") == 1  # fetched once, by nimctl; vLLM fetched nothing


def test_num_frames_is_exact(twin):
    """vLLM 0.32's Qwen3-VL loader would give 4 frames for 2 (it samples by fps)."""
    counts = {
        n: prompt_tokens(twin, video_question(CLIP), media_io_kwargs={"video": {"num_frames": n}})
        for n in (2, 4, 8)
    }
    assert counts[2] < counts[4] < counts[8]


def test_fps_changes_the_frame_count(twin):
    slow = prompt_tokens(twin, video_question(CLIP), media_io_kwargs={"video": {"fps": 2.0}})
    fast = prompt_tokens(twin, video_question(CLIP), media_io_kwargs={"video": {"fps": 8.0}})
    assert slow < fast


def test_with_fps_and_num_frames_the_fewer_frames_win(twin):
    def tokens(video: dict) -> int:
        return prompt_tokens(twin, video_question(CLIP), media_io_kwargs={"video": video})

    # 2.5 s at fps 4 is 10 frames: num_frames 2 gives fewer; num_frames 16 gives more.
    assert tokens({"fps": 4.0, "num_frames": 2}) == tokens({"num_frames": 2})
    assert tokens({"fps": 4.0, "num_frames": 16}) == tokens({"fps": 4.0})


def test_sampling_above_the_video_is_refused(twin):
    refused(
        chat(twin, QWEN, messages=video_question(CLIP), media_io_kwargs={"video": {"fps": 30.0}}),
        "media_io_kwargs",
    )
    refused(
        chat(
            twin,
            QWEN,
            messages=video_question(CLIP),
            media_io_kwargs={"video": {"num_frames": 26}},
        ),
        "media_io_kwargs",
    )


def test_mm_processor_kwargs_sizes_change_video_tokens(twin):
    """The sizes bound the pixels of all sampled frames together (Qwen3-VL's video smart_resize):
    the seed's defaults upscale the twin's 64 x 48 frames, a 4096-pixel ceiling shrinks each
    pair of frames to one 32 x 32 token."""
    default = prompt_tokens(twin, video_question(CLIP))
    seed_defaults = {"size": {"shortest_edge": 65536, "longest_edge": 16777216}}
    larger = prompt_tokens(twin, video_question(CLIP), mm_processor_kwargs=seed_defaults)
    tight = {"size": {"shortest_edge": 1024, "longest_edge": 4096}}
    smaller = prompt_tokens(twin, video_question(CLIP), mm_processor_kwargs=tight)
    assert smaller < default < larger


def test_two_videos_are_over_the_limit(twin):
    two = video_question(CLIP)
    two[0]["content"].insert(0, two[0]["content"][0])
    refused(chat(twin, QWEN, messages=two, max_tokens=1), "max_videos_per_prompt")
