"""Video end to end on the Qwen3.5 twin: real MP4s through vLLM's Qwen3-VL video processor.

The twin's processor turns each pair of frames (temporal patch 2) of a 64 x 48 video into 4
tokens plus a `<t seconds>` timestamp and the vision markers, so the prompt's token count tells
how many frames reached the model.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.seed_checks import chat, refused
from tests.e2e.seeds import QWEN
from tests.support.image_server import ImageServer
from tests.support.media import video_bytes, video_data_url

PROFILE = "qwen3.5-397b-a17b-tiny"
# Video is off in the seed profile until this is set, as on the Qwen3.5 page.
ENV = {"NIM_MAX_VIDEOS_PER_PROMPT": "1", "NIM_MEDIA_ALLOWLIST": "127.0.0.1"}
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
