"""The tiny Qwen3.5 twin: its chat template renders as Qwen3.5's does, and its files load.

Expected renderings follow the documented layout of Qwen3.5's template (ChatML turns, the
`<think>\\n` generation prefix and its `enable_thinking: false` form, vision placeholders, the XML
tool-call format that vLLM's qwen3_coder parser reads, tool responses as user turns).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jinja2.exceptions import TemplateError

from nimctl.modelgen import qwen35


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=qwen35.build_tokenizer(),
        eos_token=qwen35.IM_END,
        pad_token=qwen35.ENDOFTEXT,
        chat_template=qwen35.chat_template(),
    )


def render(tokenizer: Any, messages: list[dict], **kwargs: Any) -> str:
    kwargs.setdefault("add_generation_prompt", True)
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


USER = {"role": "user", "content": "Hi"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_thinking_is_on_by_default_and_the_switch_closes_it(tokenizer):
    assert render(tokenizer, [USER]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    assert render(tokenizer, [USER], enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert render(tokenizer, [USER], enable_thinking=True).endswith("assistant\n<think>\n")


def test_images_and_videos_stand_where_their_parts_are(tokenizer):
    content = [
        {"type": "text", "text": "Compare "},
        {"type": "image_url", "image_url": {"url": "a"}},
        {"type": "text", "text": " and "},
        {"type": "video_url", "video_url": {"url": "b"}},
    ]
    text = render(tokenizer, [{"role": "user", "content": content}])
    assert text.startswith(
        "<|im_start|>user\nCompare <|vision_start|><|image_pad|><|vision_end|> and "
        "<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
    )


def test_tools_open_the_system_turn_and_the_system_prompt_follows(tokenizer):
    system = {"role": "system", "content": "Be brief."}
    text = render(tokenizer, [system, USER], tools=[WEATHER])
    head, rest = text.split("<|im_end|>\n", 1)
    assert head.startswith("<|im_start|>system\n# Tools\n")
    listed = head.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(listed)["name"] == "get_weather"
    assert "<function=name_of_the_function>" in head and head.endswith("\n\nBe brief.")
    assert rest.startswith("<|im_start|>user\nHi<|im_end|>")


def test_a_tool_round_trip_renders_calls_as_xml_and_results_as_a_user_turn(tokenizer):
    calls = [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"type": "function", "function": {"name": "get_weather", "arguments": {"days": 2}}},
    ]
    messages = [
        USER,
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rain"},
    ]
    text = render(tokenizer, messages, tools=[WEATHER])
    assert (
        "<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n<function=get_weather>\n"
        "<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n"
        "<function=get_weather>\n<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>"
        "<|im_end|>\n"
    ) in text
    assert (
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n"
        "</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\n"
    ) in text


def test_reasoning_is_kept_only_after_the_last_user_query(tokenizer):
    messages = [
        USER,
        {"role": "assistant", "content": "Hello", "reasoning_content": "old thought"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "<think>\nnew thought\n</think>\n\nSure"},
    ]
    text = render(tokenizer, messages, add_generation_prompt=False)
    assert "old thought" not in text
    assert "<|im_start|>assistant\nHello<|im_end|>" in text
    last = "<|im_start|>assistant\n<think>\nnew thought\n</think>\n\nSure<|im_end|>\n"
    assert text.endswith(last)


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([USER, {"role": "system", "content": "late"}], "Only the first message"),
        ([{"role": "system", "content": "alone"}], "no user query"),
        (
            [
                {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "a"}}]},
                USER,
            ],
            "cannot contain images",
        ),
    ],
)
def test_the_template_refuses_what_the_real_one_refuses(tokenizer, messages, error):
    with pytest.raises(TemplateError, match=error):
        render(tokenizer, messages)


def test_the_qwen3_coder_parser_reads_the_templates_tool_call_format(tokenizer):
    """The format the template teaches is the one vLLM's parser for Qwen3.5 extracts."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    rendered = render(
        tokenizer,
        [
            USER,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
        ],
        add_generation_prompt=False,
        tools=[WEATHER],
    )
    output = rendered.rsplit("</think>\n\n", 1)[1].removesuffix("<|im_end|>\n")
    parser = ToolParserManager.get_tool_parser("qwen3_coder")(tokenizer)
    request = ChatCompletionRequest(model="m", messages=[USER], tools=[WEATHER])
    info = parser.extract_tool_calls(output, request)
    assert info.tools_called
    assert [(c.function.name, json.loads(c.function.arguments)) for c in info.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
