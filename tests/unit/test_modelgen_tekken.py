"""The generated Tekken model: Mistral-native files that mistral_common loads as version 15."""

from __future__ import annotations

import hashlib
import json

import pytest

from nimctl.modelgen.tekken import control_token_id, ensure_tekken_model, tekken_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return ensure_tekken_model(tmp_path_factory.mktemp("cache"))


def test_files_and_reuse(model_dir):
    assert model_dir == tekken_model_dir(model_dir.parents[1])
    for name in ("tekken.json", "params.json", "consolidated.safetensors", "LICENSE"):
        assert (model_dir / name).is_file()
    params = json.loads((model_dir / "params.json").read_text())
    assert params["head_dim"] == 32 and params["vocab_size"] % 64 == 0
    before = (model_dir / "consolidated.safetensors").stat().st_mtime_ns
    ensure_tekken_model(model_dir.parents[1])
    assert (model_dir / "consolidated.safetensors").stat().st_mtime_ns == before


def test_deterministic(model_dir, tmp_path):
    other = ensure_tekken_model(tmp_path)
    for name in ("tekken.json", "consolidated.safetensors"):
        assert (
            hashlib.sha256((other / name).read_bytes()).digest()
            == hashlib.sha256((model_dir / name).read_bytes()).digest()
        )


def test_mistral_common_renders_settings_and_tools(model_dir):
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    tokenizer = MistralTokenizer.from_file(str(model_dir / "tekken.json"))
    assert tokenizer.instruct_tokenizer.tokenizer.version.value == "v15"
    request = ChatCompletionRequest(messages=[UserMessage(content="hi")], reasoning_effort="high")
    high = tokenizer.encode_chat_completion(request).tokens
    low = tokenizer.encode_chat_completion(
        ChatCompletionRequest(messages=[UserMessage(content="hi")], reasoning_effort="none")
    ).tokens
    assert high != low and control_token_id("[MODEL_SETTINGS]") in high
    with pytest.raises(KeyError):
        control_token_id("[NOPE]")
