"""Every request rule of the seed pages, both sides of each boundary."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nimctl.guards import GuardError, check_request
from nimctl.profiles import Profile, ProfileStore, apply_settings, builtin_profiles_dir
from nimctl.settings import NimSettings
from tests.support.media import image_data_url, video_data_url

LARGE3 = "mistral-large-3-675b-instruct-2512"
SMALL4 = "mistral-small-4-119b-2603"
QWEN = "qwen3.5-397b-a17b"
NEMOTRON = "llama-3.1-nemotron-nano-vl-8b-v1"
ALL = (LARGE3, SMALL4, QWEN, NEMOTRON)

PNG = image_data_url("PNG")
JPEG = image_data_url("JPEG")
GIF = image_data_url("GIF")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


@pytest.fixture(scope="module")
def store() -> ProfileStore:
    return ProfileStore.load([builtin_profiles_dir()])


def profile(store: ProfileStore, name: str, **settings: Any) -> Profile:
    return apply_settings(store.get(name), NimSettings(**settings))


def accept(prof: Profile, payload: dict[str, Any]) -> dict[str, Any]:
    """The request as it leaves the guards (translations applied)."""
    body = copy.deepcopy(payload)
    check_request(body, prof)
    return body


def refuse(prof: Profile, payload: dict[str, Any], rule: str) -> GuardError:
    with pytest.raises(GuardError) as info:
        check_request(copy.deepcopy(payload), prof)
    assert info.value.rule == rule, info.value.message
    assert info.value.status == 400
    assert f"(rule: {rule})" in info.value.message
    return info.value


def msg(role: str, content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def body(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **fields}


def image_part(url: str = PNG) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str = "What is in this image?") -> dict[str, Any]:
    return {"type": "text", "text": text}


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


# --- roles -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_function_role_is_refused_everywhere_with_the_fix(store, name):
    error = refuse(
        profile(store, name), body(msg("user"), msg("function", name="f")), "no_function_role"
    )
    assert "role 'tool'" in error.message and error.param == "messages[1].role"


def test_unknown_role_is_refused(store):
    refuse(profile(store, QWEN), body(msg("bot")), "known_roles")


@pytest.mark.parametrize("name", (LARGE3, SMALL4))
class TestMistralAlternation:
    def test_accepted_conversations(self, store, name):
        prof = profile(store, name)
        accept(prof, body(msg("user")))
        accept(prof, body(msg("system"), msg("user")))
        accept(prof, body(msg("user"), msg("assistant"), msg("user")))
        accept(
            prof,
            body(
                msg("system"),
                msg("user"),
                msg("assistant", None, tool_calls=[CALL]),
                msg("tool", "21C", tool_call_id="call_1"),
            ),
        )
        accept(
            prof,
            body(
                msg("user"),
                msg("assistant", None, tool_calls=[CALL]),
                msg("tool", "21C", tool_call_id="call_1"),
                msg("assistant"),
                msg("user"),
            ),
        )

    @pytest.mark.parametrize(
        ("conversation", "index", "fragment"),
        [
            (("assistant", "user"), 0, "starts with a user message"),
            (("system", "assistant"), 1, "starts with a user message"),
            (("user", "user"), 1, "Merge consecutive user messages"),
            (("user", "assistant", "assistant", "user"), 2, "Merge consecutive assistant"),
            (("user", "system"), 1, "only takes one, first"),
            (("user", "tool"), 1, "right after the assistant message whose tool_calls"),
            (("user", "assistant"), 1, "ends with an assistant message"),
        ],
    )
    def test_refused_orders(self, store, name, conversation, index, fragment):
        error = refuse(
            profile(store, name), body(*(msg(r) for r in conversation)), "strict_alternation"
        )
        assert fragment in error.message
        assert error.param == f"messages[{index}].role"

    def test_tool_calls_need_results(self, store, name):
        prof = profile(store, name)
        refuse(
            prof, body(msg("user"), msg("assistant", None, tool_calls=[CALL])), "strict_alternation"
        )
        refuse(
            prof,
            body(msg("user"), msg("assistant", None, tool_calls=[CALL]), msg("user")),
            "strict_alternation",
        )

    def test_final_assistant_only_to_continue_it(self, store, name):
        prof = profile(store, name)
        ending = body(msg("user"), msg("assistant", "Once upon"))
        accept(prof, {**ending, "add_generation_prompt": False, "continue_final_message": True})
        refuse(prof, {**ending, "add_generation_prompt": False}, "strict_alternation")
        refuse(prof, {**ending, "continue_final_message": True}, "strict_alternation")


def test_other_models_do_not_require_alternation(store):
    for name in (QWEN, NEMOTRON):
        accept(profile(store, name), body(msg("user"), msg("user")))


# --- chat template and reasoning parameters ---------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_request_chat_template_is_refused(store, name):
    error = refuse(
        profile(store, name), body(msg("user"), chat_template="{{ x }}"), "no_request_chat_template"
    )
    assert error.param == "chat_template"


@pytest.mark.parametrize("name", (LARGE3, SMALL4))
def test_mistral_refuses_chat_template_kwargs(store, name):
    prof = profile(store, name)
    error = refuse(
        prof,
        body(msg("user"), chat_template_kwargs={"enable_thinking": False}),
        "no_chat_template_kwargs",
    )
    assert "Mistral tokenizer" in error.message
    accept(prof, body(msg("user"), chat_template_kwargs={}))


def test_qwen_takes_enable_thinking_only(store):
    prof = profile(store, QWEN)
    accept(prof, body(msg("user"), chat_template_kwargs={"enable_thinking": False}))
    error = refuse(
        prof,
        body(msg("user"), chat_template_kwargs={"thinking_budget": 5}),
        "known_chat_template_kwargs",
    )
    assert "accepted keys: enable_thinking" in error.message
    refuse(
        profile(store, NEMOTRON),
        body(msg("user"), chat_template_kwargs={"x": 1}),
        "known_chat_template_kwargs",
    )


def test_mistral_small4_reasoning_effort(store):
    prof = profile(store, SMALL4)
    assert accept(prof, body(msg("user"), reasoning_effort="high"))["reasoning_effort"] == "high"
    # The seed's default ("none") is made explicit, so the checkpoint's own default is moot.
    assert accept(prof, body(msg("user")))["reasoning_effort"] == "none"
    error = refuse(prof, body(msg("user"), reasoning_effort="medium"), "reasoning_effort_values")
    assert "'none', 'high'" in error.message


@pytest.mark.parametrize("name", (LARGE3, NEMOTRON))
def test_reasoning_effort_refused_without_reasoning(store, name):
    refuse(
        profile(store, name), body(msg("user"), reasoning_effort="high"), "reasoning_effort_values"
    )


def test_qwen_reasoning_is_on_unless_turned_off(store):
    prof = profile(store, QWEN)
    assert "reasoning_effort" not in accept(prof, body(msg("user")))
    accept(prof, body(msg("user"), reasoning_effort="none"))


def test_include_reasoning_false_only_without_streaming_on_qwen(store):
    prof = profile(store, QWEN)
    accept(prof, body(msg("user"), include_reasoning=False))
    accept(prof, body(msg("user"), include_reasoning=True, stream=True))
    error = refuse(
        prof,
        body(msg("user"), include_reasoning=False, stream=True),
        "include_reasoning_not_streamed",
    )
    assert error.param == "include_reasoning"
    accept(profile(store, SMALL4), body(msg("user"), include_reasoning=False, stream=True))


# --- tools ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", (LARGE3, SMALL4, QWEN))
@pytest.mark.parametrize(
    "choice",
    ["none", "auto", "required", {"type": "function", "function": {"name": "get_weather"}}],
)
def test_tool_choices_with_tools(store, name, choice):
    accept(profile(store, name), body(msg("user"), tools=TOOLS, tool_choice=choice))


@pytest.mark.parametrize("choice", ["none", "auto", "required"])
def test_tool_choice_without_tools_is_refused(store, choice):
    error = refuse(
        profile(store, QWEN), body(msg("user"), tool_choice=choice), "tool_choice_needs_tools"
    )
    assert error.param == "tool_choice"


def test_named_tool_must_exist_and_type_is_optional(store):
    prof = profile(store, SMALL4)
    named = {"function": {"name": "get_weather"}}
    assert accept(prof, body(msg("user"), tools=TOOLS, tool_choice=named))["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    refuse(
        prof,
        body(msg("user"), tools=TOOLS, tool_choice={"function": {"name": "nope"}}),
        "named_tool_exists",
    )


def test_tools_need_a_tool_parser(store):
    refuse(profile(store, NEMOTRON), body(msg("user"), tools=TOOLS), "tools_supported")


# --- images ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "limit"), [(LARGE3, 10), (SMALL4, 5), (QWEN, 5), (NEMOTRON, 4)])
def test_image_limit_is_the_profile_default(store, name, limit):
    prof = profile(store, name)
    accept(prof, body(msg("user", [text_part(), *[image_part()] * limit])))
    error = refuse(
        prof,
        body(msg("user", [text_part(), *[image_part()] * (limit + 1)])),
        "max_images_per_prompt",
    )
    assert f"NIM_MAX_IMAGES_PER_PROMPT={limit}" in error.message
    assert error.param == f"messages[0].content[{limit + 1}]"


def test_image_limit_follows_the_setting_and_counts_all_messages(store):
    prof = profile(store, LARGE3, max_images_per_prompt=2)
    accept(prof, body(msg("user", [image_part()]), msg("assistant"), msg("user", [image_part()])))
    error = refuse(
        prof,
        body(
            msg("user", [image_part(), image_part()]), msg("assistant"), msg("user", [image_part()])
        ),
        "max_images_per_prompt",
    )
    assert "at most 2" in error.message and error.param == "messages[2].content[0]"


@pytest.mark.parametrize("kind", ["image_pil", "image_embeds", "input_audio", "file"])
def test_server_side_part_types_are_refused(store, kind):
    error = refuse(
        profile(store, QWEN), body(msg("user", [{"type": kind, kind: "x"}])), "content_part_types"
    )
    assert error.param == "messages[0].content[0].type"


# --- Nemotron translations --------------------------------------------------------------


def test_nemotron_img_tags_become_image_parts(store):
    content = (
        f'<img src="{PNG}" /> How many times more "FP16Tensor Core" does H100 SXM have'
        " than H100 NVL?"
    )
    out = accept(profile(store, NEMOTRON), body(msg("user", content)))
    assert out["messages"][0]["content"] == [
        image_part(PNG),
        text_part('How many times more "FP16Tensor Core" does H100 SXM have than H100 NVL?'),
    ]


def test_img_tags_with_urls_single_quotes_and_several_images(store):
    content = (
        "Compare <img src='https://a.example/x.png'> and <IMG SRC=\"https://b.example/y.jpg\">"
    )
    out = accept(profile(store, NEMOTRON), body(msg("user", content)))
    assert [p["type"] for p in out["messages"][0]["content"]] == ["image_url", "image_url", "text"]
    assert out["messages"][0]["content"][2]["text"] == "Compare  and"


def test_img_tags_count_against_the_limit(store):
    content = " ".join(f'<img src="{PNG}">' for _ in range(5)) + " describe"
    refuse(profile(store, NEMOTRON), body(msg("user", content)), "max_images_per_prompt")


def test_img_tags_are_plain_text_elsewhere(store):
    content = f'<img src="{PNG}"> hi'
    assert (
        accept(profile(store, QWEN), body(msg("user", content)))["messages"][0]["content"]
        == content
    )


def test_nemotron_puts_images_before_text(store):
    out = accept(
        profile(store, NEMOTRON),
        body(msg("user", [text_part("a"), image_part(PNG), text_part("b"), image_part(JPEG)])),
    )
    assert out["messages"][0]["content"] == [
        image_part(PNG),
        image_part(JPEG),
        text_part("a"),
        text_part("b"),
    ]
    kept = accept(profile(store, QWEN), body(msg("user", [text_part("a"), image_part(PNG)])))
    assert kept["messages"][0]["content"][0] == text_part("a")


# --- video and media kwargs -------------------------------------------------------------


def video_part(url: str) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": url}}


@pytest.fixture(scope="module")
def video() -> str:
    return video_data_url(frames=25, fps=10.0)


def test_video_off_by_default_says_how_to_enable(store, video):
    error = refuse(
        profile(store, QWEN), body(msg("user", [video_part(video)])), "max_videos_per_prompt"
    )
    assert "NIM_MAX_VIDEOS_PER_PROMPT=1" in error.message


def test_video_on_with_the_setting(store, video):
    prof = profile(store, QWEN, max_videos_per_prompt=1)
    accept(prof, body(msg("user", [video_part(video), text_part()])))
    refuse(prof, body(msg("user", [video_part(video), video_part(video)])), "max_videos_per_prompt")


def test_models_without_video_refuse_it(store, video):
    error = refuse(profile(store, SMALL4), body(msg("user", [video_part(video)])), "video_input")
    assert "takes no video" in error.message


@pytest.mark.parametrize(
    ("io", "accepted"),
    [
        ({"video": {"fps": 3.0}}, True),
        ({"video": {"num_frames": 16}}, True),
        ({"video": {"fps": 2.0, "num_frames": 16}}, True),
        ({"video": {"fps": 0}}, False),
        ({"video": {"num_frames": 1.5}}, False),
        ({"video": {"speed": 2}}, False),
        ({"image": {}}, False),
    ],
)
def test_media_io_kwargs_shape(store, video, io, accepted):
    prof = profile(store, QWEN, max_videos_per_prompt=1)
    payload = body(msg("user", [video_part(video), text_part()]), media_io_kwargs=io)
    if accepted:
        assert accept(prof, payload)["media_io_kwargs"] == io
    else:
        refuse(prof, payload, "media_io_kwargs")


def test_media_io_kwargs_need_a_video(store):
    refuse(
        profile(store, QWEN),
        body(msg("user"), media_io_kwargs={"video": {"fps": 1.0}}),
        "media_io_kwargs",
    )


@pytest.mark.parametrize(
    ("size", "accepted"),
    [
        ({"shortest_edge": 1568, "longest_edge": 262144}, True),
        ({"longest_edge": 16_777_216}, True),
        ({"longest_edge": 16_777_217}, False),
        ({"shortest_edge": 0}, False),
        ({"shortest_edge": 600, "longest_edge": 500}, False),
        ({"height": 5}, False),
    ],
)
def test_mm_processor_size_bounds(store, size, accepted):
    payload = body(msg("user", [image_part()]), mm_processor_kwargs={"size": size})
    if accepted:
        accept(profile(store, QWEN), payload)
    else:
        refuse(profile(store, QWEN), payload, "mm_processor_kwargs")


@pytest.mark.parametrize("name", (LARGE3, SMALL4, NEMOTRON))
def test_request_mm_kwargs_only_where_documented(store, name):
    refuse(
        profile(store, name),
        body(msg("user", [image_part()]), mm_processor_kwargs={"size": {"longest_edge": 9}}),
        "request_mm_kwargs",
    )


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [1, None]}, "messages[0]"),
        ({"messages": [{"role": 3}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [[["x"]]]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "assistant", "tool_calls": -3}]}, "messages[0].tool_calls"),
    ],
)
def test_malformed_messages_are_refused_with_their_place(store, payload, param):
    """vLLM validates message contents lazily, deep in rendering; the shape is checked first."""
    with pytest.raises(GuardError) as caught:
        check_request(payload, profile(store, SMALL4))
    assert caught.value.rule == "message_shape"
    assert caught.value.param == param
