"""The tiny Mistral Small 4 and Large 3 twins: files that mistral_common and vLLM's Mistral-native
loaders take.

vLLM itself is not imported (its model modules pull in torch kernels and, for Pixtral,
torchvision); its loaders' name mappings are read from its source instead, so a vLLM upgrade that
renames a module fails here rather than at a server's start, or silently for vision weights,
which Pixtral's loader skips when it does not know their name.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from nimctl.modelgen import BUILTINS
from nimctl.modelgen.mistral import LARGE3, SMALL4, MistralTwin, ensure_mistral_model
from nimctl.modelgen.tekken import control_token_id

IMG, BREAK, END = (control_token_id(t) for t in ("[IMG]", "[IMG_BREAK]", "[IMG_END]"))


@pytest.fixture(scope="module", params=[SMALL4, LARGE3], ids=["small4", "large3"])
def twin(request: pytest.FixtureRequest) -> MistralTwin:
    return request.param


@pytest.fixture(scope="module")
def model_dir(twin: MistralTwin, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_mistral_model(tmp_path_factory.mktemp("cache"), twin)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return MistralTokenizer.from_file(str(model_dir / "tekken.json"))


@pytest.fixture(scope="module")
def params(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "params.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tensors(model_dir: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(model_dir / "consolidated.safetensors"), "pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118


def vllm_source(module: str) -> str:
    spec = find_spec("vllm")
    assert spec is not None and spec.submodule_search_locations, "vLLM is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    return (root / "model_executor" / "models" / f"{module}.py").read_text(encoding="utf-8")


def attributes(source: str) -> set[str]:
    """Names a module assigns as `self.<name> = ...`: its submodules and parameters."""
    return set(re.findall(r"self\.(\w+)\s*(?::[^=\n]+)?=", source))


def literal(source: str, name: str) -> Any:
    """The value of `name = <literal>` anywhere in `source` (e.g. inside a method)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not in the source")


def test_builtin_and_files(twin: MistralTwin, model_dir: Path) -> None:
    # vLLM's pixtral module needs the CPU torchvision workaround.
    assert BUILTINS["tiny-mistral-small4"].cpu_torchvision
    assert BUILTINS["tiny-mistral-large3"].cpu_torchvision
    assert model_dir == twin.model_dir(model_dir.parents[1])
    for name in ("tekken.json", "params.json", "consolidated.safetensors", "LICENSE"):
        assert (model_dir / name).is_file()
    assert "not trained" in (model_dir / "LICENSE").read_text(encoding="utf-8")


def test_deterministic(twin: MistralTwin, model_dir: Path, tmp_path: Path) -> None:
    other = ensure_mistral_model(tmp_path, twin)
    for name in ("tekken.json", "params.json", "consolidated.safetensors", "LICENSE"):
        assert (
            hashlib.sha256((other / name).read_bytes()).hexdigest()
            == hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
        ), name


def test_twins_differ_where_the_real_models_do() -> None:
    assert (SMALL4.tokenizer_version, LARGE3.tokenizer_version) == ("v15", "v13")
    assert SMALL4.name != LARGE3.name
    assert SMALL4.params["moe"]["first_k_dense_replace"] == 0
    assert LARGE3.params["moe"]["first_k_dense_replace"] == 1  # DeepSeek-V3's dense first layers
    assert LARGE3.params["moe"]["num_expert_groups"] == 2  # routed by group


def test_tokenizer_version_with_an_image_encoder(twin: MistralTwin, tokenizer: Any) -> None:
    from mistral_common.tokens.tokenizers.base import TokenizerVersion
    from mistral_common.tokens.tokenizers.image import ImageEncoder

    instruct = tokenizer.instruct_tokenizer
    assert instruct.tokenizer.version == TokenizerVersion(twin.tokenizer_version)
    assert isinstance(instruct.mm_encoder, ImageEncoder)
    assert instruct.tokenizer.n_words == 1024
    assert instruct.tokenizer.get_special_token("[TOOL_CALLS]") == control_token_id("[TOOL_CALLS]")
    with pytest.raises(KeyError):
        control_token_id("[NOPE]")


def encode(tokenizer: Any, content: Any, **request: Any) -> Any:
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    chat = ChatCompletionRequest(messages=[UserMessage(content=content)], **request)
    return tokenizer.encode_chat_completion(chat)


def text(tokenizer: Any, encoded: Any) -> str:
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

    return tokenizer.decode(encoded.tokens, special_token_policy=SpecialTokenPolicy.KEEP)


def test_images_become_the_merged_patch_grid(tokenizer: Any) -> None:
    """64 px = 4 x 4 patches of 16 = 2 x 2 tokens after the 2 x 2 merge, one break per row."""
    from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
    from PIL import Image

    text = encode(tokenizer, "hi").tokens

    def image_tokens(size: tuple[int, int]) -> tuple[list[int], int]:
        chunks = [TextChunk(text="hi"), ImageChunk(image=Image.new("RGB", size, (9, 99, 199)))]
        encoded = encode(tokenizer, chunks)
        assert len(encoded.images) == 1
        return [t for t in encoded.tokens if t in (IMG, BREAK, END)], len(encoded.tokens)

    grid, count = image_tokens((64, 64))
    assert grid == [IMG, IMG, BREAK, IMG, IMG, END]
    assert count == len(text) + 6
    # Larger images are scaled down to 64 px on their long side: 300 x 120 -> 64 x 32.
    grid, _ = image_tokens((300, 120))
    assert grid == [IMG, IMG, END]


def test_reasoning_effort_is_rendered_as_model_settings(twin: MistralTwin, tokenizer: Any) -> None:
    from pydantic import ValidationError

    if twin is LARGE3:
        pytest.skip("an instruct model: see test_an_instruct_model_refuses_reasoning_effort")

    high = encode(tokenizer, "hi", reasoning_effort="high")
    none = encode(tokenizer, "hi", reasoning_effort="none")
    assert high.tokens != none.tokens
    assert '[MODEL_SETTINGS]{"reasoning_effort": "high"}[/MODEL_SETTINGS]' in text(tokenizer, high)
    assert '[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS]' in text(tokenizer, none)
    assert encode(tokenizer, "hi").tokens == none.tokens  # "none" is the default
    with pytest.raises(ValidationError):
        encode(tokenizer, "hi", reasoning_effort="low")


def test_an_instruct_model_refuses_reasoning_effort(twin: MistralTwin, tokenizer: Any) -> None:
    from mistral_common.exceptions import InvalidRequestException

    if twin is SMALL4:
        pytest.skip("a reasoning model")
    assert tokenizer.instruct_tokenizer.tokenizer.model_settings_builder is None
    with pytest.raises(InvalidRequestException, match="reasoning_effort"):
        encode(tokenizer, "hi", reasoning_effort="high")
    assert text(tokenizer, encode(tokenizer, "hi")) == "<s>[INST]hi[/INST]"


def test_params_make_vllm_choose_pixtral_over_mistral_large3(params: dict[str, Any]) -> None:
    """The keys vLLM's adapt_config_dict reads to pick the real model's classes."""
    assert params["qk_nope_head_dim"] and params["moe"]["num_shared_experts"] > 0  # MLA + MoE
    assert set(params["llama_4_scaling"]) >= {"original_max_position_embeddings", "beta"}
    assert params["yarn"]["apply_scale"] is False
    # vLLM's CPU MLA decode kernel handles only a 512 + 64 latent (see nimctl.modelgen.mistral).
    assert params["kv_lora_rank"] == 512 and params["qk_rope_head_dim"] == 64
    assert params["max_position_embeddings"] == params["max_seq_len"] == 8192
    vision = params["vision_encoder"]
    assert (vision["image_token_id"], vision["image_break_token_id"]) == (IMG, BREAK)
    assert vision["image_end_token_id"] == END
    assert vision["mm_projector_id"] == "patch_merge"


def test_vision_keys_fill_vllms_encoder_args(params: dict[str, Any]) -> None:
    """Pixtral builds VisionEncoderArgs from the keys it knows; the ones without a default must
    be there, and the ones with a default that the real model sets too."""
    tree = ast.parse(vllm_source("pixtral"))
    (args,) = (
        n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "VisionEncoderArgs"
    )
    fields = {
        s.target.id: s.value is None
        for s in args.body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    }
    required = {name for name, no_default in fields.items() if no_default}
    assert required <= set(params["vision_encoder"])
    assert {"adapter_bias", "spatial_merge_size", "add_pre_mm_projector_layer_norm"} <= set(
        params["vision_encoder"]
    )


def test_language_model_names_map_onto_deepseek_v3(tensors: dict[str, tuple[int, ...]]) -> None:
    """Each text tensor matches exactly one of MistralLarge3ForCausalLM's name patterns, and the
    name it becomes is made of DeepSeek-V3 module attributes."""
    source = vllm_source("mistral_large_3")
    patterns = [(re.compile(key.args[0].value), to) for key, to in _regex_mapping(source)]
    assert len(patterns) > 10
    known = attributes(vllm_source("deepseek_v2")) | {"model", "weight"}
    text = [n for n in tensors if not n.startswith(_VISION_PREFIXES)]
    for name in text:
        hits = [(p, to) for p, to in patterns if p.fullmatch(name)]
        assert len(hits) == 1, (name, hits)
        pattern, to = hits[0]
        mapped = pattern.sub(to, name)
        parts = [p for p in mapped.split(".") if not p.isdigit()]
        assert set(parts) <= known | {"gate_proj", "up_proj", "down_proj"}, mapped


def _regex_mapping(source: str) -> list[tuple[ast.Call, str]]:
    pairs = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Call)
                    and isinstance(key.func, ast.Attribute)
                    and key.func.attr == "compile"
                    and isinstance(value, ast.Constant)
                ):
                    pairs.append((key, value.value))
    return pairs


_VISION_PREFIXES = (
    "vision_encoder.",
    "patch_merger.",
    "pre_mm_projector_norm.",
    "vision_language_adapter.",
)


def test_vision_names_reach_pixtral_parameters(tensors: dict[str, tuple[int, ...]]) -> None:
    """Pixtral's loader renames the native vision names (stacking wq/wk/wv and w1/w3) as below,
    then looks them up among its modules' parameters; every part must be one of its attributes."""
    source = vllm_source("pixtral")
    stacked = literal(source, "_vision_encoder_stacked_params")
    remap = literal(source, "_vision_encoder_name_remap")
    known = attributes(source) | {"weight"}
    vision = [n for n in tensors if n.startswith(_VISION_PREFIXES)]
    assert len(vision) == 15
    for name in vision:
        trimmed = name.split(".", 1)[1]
        if name.startswith("vision_encoder."):
            for param, weight, _ in stacked:
                if weight in trimmed:
                    trimmed = trimmed.replace(weight, param)
                    break
            else:
                for old, new in remap.items():
                    if old in trimmed:
                        trimmed = trimmed.replace(old, new)
                        break
        parts = [name.split(".")[0], *(p for p in trimmed.split(".") if not p.isdigit())]
        assert set(parts) <= known, (name, trimmed)


def mla_shapes(p: dict[str, Any], layer: int) -> dict[str, tuple[int, ...]]:
    """DeepSeek-V3's attention projections (out x in), from the config alone."""
    at = f"layers.{layer}.attention"
    dim, heads, rope = p["dim"], p["n_heads"], p["qk_rope_head_dim"]
    return {
        f"{at}.wq_a.weight": (p["q_lora_rank"], dim),
        f"{at}.wq_b.weight": (heads * (p["qk_nope_head_dim"] + rope), p["q_lora_rank"]),
        f"{at}.wkv_a_with_mqa.weight": (p["kv_lora_rank"] + rope, dim),
        f"{at}.kv_a_norm.weight": (p["kv_lora_rank"],),
        f"{at}.wkv_b.weight": (
            heads * (p["qk_nope_head_dim"] + p["v_head_dim"]),
            p["kv_lora_rank"],
        ),
        f"{at}.wo.weight": (dim, heads * p["v_head_dim"]),
    }


def test_shapes_follow_the_config(
    params: dict[str, Any], tensors: dict[str, tuple[int, ...]]
) -> None:
    dim, moe, vision = params["dim"], params["moe"], params["vision_encoder"]
    assert tensors["tok_embeddings.weight"] == tensors["output.weight"] == (1024, dim)
    expert = moe["expert_hidden_dim"]
    for layer in range(params["n_layers"]):
        for name, shape in mla_shapes(params, layer).items():
            assert tensors[name] == shape, name
        if layer < moe["first_k_dense_replace"]:
            assert tensors[f"layers.{layer}.feed_forward.w1.weight"] == (params["hidden_dim"], dim)
            assert not any(n.startswith(f"layers.{layer}.experts.") for n in tensors)
            continue
        assert f"layers.{layer}.feed_forward.w1.weight" not in tensors
        assert tensors[f"layers.{layer}.gate.weight"] == (moe["num_experts"], dim)
        for e in range(moe["num_experts"]):
            assert tensors[f"layers.{layer}.experts.{e}.w2.weight"] == (dim, expert)
        assert not any(f"layers.{layer}.experts.{moe['num_experts']}." in n for n in tensors)
        assert tensors[f"layers.{layer}.shared_experts.w1.weight"] == (expert, dim)
    hv, patch = vision["hidden_size"], vision["patch_size"]
    assert tensors["vision_encoder.patch_conv.weight"] == (hv, 3, patch, patch)
    merged = hv * vision["spatial_merge_size"] ** 2
    assert tensors["patch_merger.merging_layer.weight"] == (hv, merged)
    assert tensors["vision_language_adapter.w_in.weight"] == (dim, hv)
    assert tensors["vision_language_adapter.w_out.weight"] == (dim, dim)
    # adapter_bias false: a bias tensor would be an unexpected weight for vLLM.
    assert not any(n.endswith(".bias") for n in tensors)
    dense = moe["first_k_dense_replace"]
    moe_layers = params["n_layers"] - dense
    per_layer = 9  # two norms, seven attention tensors
    expected = (
        2
        + 1  # embeddings and output; final norm
        + params["n_layers"] * per_layer
        + dense * 3
        + moe_layers * (1 + 3 * (1 + moe["num_experts"]))  # gate, shared and routed experts
        + 15  # vision
    )
    assert len(tensors) == expected
