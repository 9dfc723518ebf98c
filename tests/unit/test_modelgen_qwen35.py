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


# --- the generated checkpoint ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return qwen35.ensure_qwen35_model(tmp_path_factory.mktemp("cache"))


def test_the_checkpoint_is_the_real_architecture_with_consistent_token_ids(model_dir):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    assert config.model_type == "qwen3_5_moe"
    assert config.architectures == ["Qwen3_5MoeForConditionalGeneration"]
    text = config.text_config
    assert text.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    assert text.num_experts == 4 and text.shared_expert_intermediate_size == 32
    # vLLM's CPU kernels: gated delta-net head dims 64 or 128, MoE sizes multiples of 32.
    assert text.linear_key_head_dim == text.linear_value_head_dim == 64
    assert text.moe_intermediate_size % 32 == 0 and text.hidden_size % 32 == 0
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer.convert_tokens_to_ids
    assert config.image_token_id == ids("<|image_pad|>")
    assert config.video_token_id == ids("<|video_pad|>")
    assert config.vision_start_token_id == ids("<|vision_start|>")
    assert config.vision_end_token_id == ids("<|vision_end|>")
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [ids("<|im_end|>"), ids("<|endoftext|>")]
    assert len(tokenizer) == text.vocab_size  # every sampled id decodes to a token
    # Decoding keeps the parsers' markers (not special), drops the turn markers (special).
    marked = ids(["<think>", "</think>", "<tool_call>", "<|im_end|>"])
    assert tokenizer.decode(marked, skip_special_tokens=True) == "<think></think><tool_call>"


def test_the_processors_are_the_real_classes(model_dir):
    image = json.loads((model_dir / "preprocessor_config.json").read_text())
    video = json.loads((model_dir / "video_preprocessor_config.json").read_text())
    assert image["image_processor_type"].startswith("Qwen2VLImageProcessor")
    assert video["video_processor_type"] == "Qwen3VLVideoProcessor"
    assert image["patch_size"] == video["patch_size"] == 16
    assert (model_dir / "chat_template.jinja").read_text() == qwen35.chat_template()
    assert (model_dir / "LICENSE").read_text().startswith("nimctl tiny Qwen3.5")


def test_builds_are_identical(model_dir, tmp_path):
    again = qwen35.ensure_qwen35_model(tmp_path)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name
