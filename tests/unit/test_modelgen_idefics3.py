"""The generated demo model: complete, reusable, and with the tokens vLLM's parsers need."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nimctl.modelgen.idefics3 import ensure_tiny_model, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("cache"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_reuse(model_dir):
    assert model_dir == tiny_model_dir(model_dir.parents[1])
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "processor_config.json",
        "LICENSE",
    ):
        assert (model_dir / name).is_file(), name
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(model_dir.parents[1]) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["Idefics3ForConditionalGeneration"]


def test_build_is_deterministic(model_dir, tmp_path):
    other = ensure_tiny_model(tmp_path)
    for name in ("model.safetensors", "tokenizer.json"):
        assert digest(other / name) == digest(model_dir / name)


def test_incomplete_directory_is_rebuilt(tmp_path):
    target = tiny_model_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a crashed hand-made copy, no marker
    assert (ensure_tiny_model(tmp_path) / "model.safetensors").is_file()


def test_parser_tokens_are_single_tokens(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for token in (
        "<think>",
        "</think>",
        "<tool_call>",
        "</tool_call>",
        "<image>",
        "[THINK]",
        "[/THINK]",
        "[TOOL_CALLS]",
        "[INST]",
    ):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token


def test_chat_template_renders_images_tools_and_thinking(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "User: <image>What?<end_of_utterance>" in prompt
    assert prompt.endswith("Assistant:")
    off = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert off.endswith("<think>\n\n</think>\n\n")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    with_tools = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert "<tools>" in with_tools and "get_weather" in with_tools
