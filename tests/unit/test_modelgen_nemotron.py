"""The tiny Llama 3.1 Nemotron Nano VL twin: its files are what vLLM's LlamaNemotronVLChatModel
reads from the real checkpoint, its remote code works, its template renders Llama 3.1 turns with
images first, and every build is identical.

The remote code is imported from nimctl's package here, not through transformers' dynamic
modules, which would copy it into a modules cache outside the test's directories.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import TemplateError

from nimctl.modelgen import BUILTINS, nemotron


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nemotron.ensure_nemotron_model(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def config_json(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "config.json").read_text())


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(model_dir))


def render(tokenizer: Any, messages: list[dict], **kwargs: Any) -> str:
    kwargs.setdefault("add_generation_prompt", True)
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


# --- config.json and the files vLLM reads ------------------------------------------------------


def test_the_config_has_the_real_top_level_keys(config_json):
    assert config_json["architectures"] == ["Llama_Nemotron_Nano_VL"]
    assert config_json["model_type"] == "Llama_Nemotron_Nano_VL"
    assert config_json["auto_map"] == {"AutoConfig": "configuration.NimctlNemotronVLConfig"}
    assert config_json["force_image_size"] == 64
    assert config_json["downsample_ratio"] == 0.5
    assert config_json["ps_version"] == "v2"
    assert config_json["dtype"] == "bfloat16"  # vLLM casts the tower's features to bf16
    llm = config_json["llm_config"]
    assert llm["architectures"] == ["LlamaForCausalLM"]
    assert llm["rope_parameters"]["rope_type"] == "llama3"
    assert llm["rope_parameters"]["rope_theta"] == 500000.0
    assert llm["head_dim"] >= 32  # vLLM's CPU attention
    vision = config_json["vision_config"]
    assert vision["model_type"] == "radio"
    assert vision["auto_map"] == {"AutoModel": "radio_twin.TwinRadioModel"}
    assert config_json["vit_hidden_size"] == vision["hidden_size"]


def test_a_tile_is_four_tokens(config_json):
    """The arithmetic vLLM does: (image_size / patch)^2 x downsample_ratio^2."""
    vision = config_json["vision_config"]
    size = config_json["force_image_size"]
    assert (size // vision["patch_size"]) ** 2 * config_json["downsample_ratio"] ** 2 == 4


def test_the_image_processor_keys_vllm_reads(model_dir):
    processor = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert processor["image_size"] == 64
    assert processor["max_num_tiles"] == 12
    assert processor["use_thumbnail"] is True
    assert processor["auto_map"] == {
        "AutoImageProcessor": "image_processing.NimctlNemotronImageProcessor"
    }


def test_the_remote_code_is_in_the_model_directory(model_dir):
    source = Path(nemotron.__file__).with_name("nemotron_remote")
    for name in nemotron.REMOTE_CODE:
        assert (model_dir / name).read_bytes() == (source / name).read_bytes(), name
    assert (model_dir / "LICENSE").read_text().startswith("nimctl tiny Llama 3.1 Nemotron")


def test_the_builtin_turns_on_the_cpu_torchvision_workaround():
    assert BUILTINS["tiny-nemotron-nano-vl"].cpu_torchvision


# --- the remote code ----------------------------------------------------------------------------


def test_the_config_class_points_the_vision_tower_at_the_model_directory(model_dir, config_json):
    from transformers import LlamaConfig, RadioConfig

    from nimctl.modelgen.nemotron_remote.configuration import NimctlNemotronVLConfig

    # As AutoConfig calls it, with the keyword vLLM adds for this model type.
    config = NimctlNemotronVLConfig(
        **config_json, name_or_path=str(model_dir), attn_implementation="eager"
    )
    assert isinstance(config.vision_config, RadioConfig)
    assert isinstance(config.llm_config, LlamaConfig)
    assert config.vision_config._name_or_path == str(model_dir)
    assert config.force_image_size == 64 and config.ps_version == "v2"


def test_the_tower_takes_x_and_gives_sixteen_features_a_tile(model_dir, config_json):
    """vLLM calls `vision_model(x=pixels).features` with float32 pixels; 16 patches a tile,
    pixel-shuffled by 0.5 into 4 tokens."""
    import torch
    from safetensors.torch import load_file
    from transformers import RadioConfig

    from nimctl.modelgen.nemotron_remote.radio_twin import TwinRadioModel

    vision = {k: v for k, v in config_json["vision_config"].items() if k != "model_type"}
    tower = TwinRadioModel(RadioConfig(**vision)).to(torch.bfloat16).eval()
    weights = load_file(str(model_dir / "model.safetensors"))
    prefix = "vision_model."
    own = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
    missing, unexpected = tower.load_state_dict(own, strict=False)
    assert not missing and not unexpected
    with torch.no_grad():
        features = tower(x=torch.rand(3, 3, 64, 64)).features
    assert features.shape == (3, 16, config_json["vit_hidden_size"])
    assert features.dtype == torch.bfloat16


def test_the_image_processor_holds_the_tiling_settings(model_dir):
    from PIL import Image

    from nimctl.modelgen.nemotron_remote.image_processing import NimctlNemotronImageProcessor

    settings = json.loads((model_dir / "preprocessor_config.json").read_text())
    processor = NimctlNemotronImageProcessor(**settings)
    assert (processor.image_size, processor.max_num_tiles, processor.use_thumbnail) == (
        64,
        12,
        True,
    )
    pixels = processor.preprocess(Image.new("RGB", (100, 50), "red"))["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64)


def test_the_weights_are_what_vllm_loads(model_dir, config_json):
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(model_dir / "model.safetensors"))
    assert {name.split(".")[0] for name in weights} == {"language_model", "vision_model", "mlp1"}
    assert all(t.dtype == torch.bfloat16 for t in weights.values() if t.is_floating_point())
    llm = config_json["llm_config"]
    assert weights["language_model.lm_head.weight"].shape == (llm["vocab_size"], 128)
    # mlp1: LayerNorm and Linear over the 4 pixel-shuffled features, then Linear to the LLM.
    shuffled = config_json["vit_hidden_size"] * 4
    assert weights["mlp1.0.weight"].shape == (shuffled,)
    assert weights["mlp1.1.weight"].shape == (config_json["projector_hidden_size"], shuffled)
    assert weights["mlp1.3.weight"].shape == (
        llm["hidden_size"],
        config_json["projector_hidden_size"],
    )


# --- tokenizer ----------------------------------------------------------------------------------


def test_the_tokenizer_has_llama_31s_specials_and_the_vl_tokens(tokenizer, config_json, model_dir):
    ids = tokenizer.convert_tokens_to_ids
    llama = [ids(t) for t in nemotron.LLAMA_SPECIAL]
    assert llama == list(range(llama[0], llama[0] + len(llama)))  # in the real order
    for token in (*nemotron.LLAMA_SPECIAL, *nemotron.VL_SPECIAL):
        assert tokenizer.tokenize(token) == [token]  # one token each
    llm = config_json["llm_config"]
    assert len(tokenizer) == llm["vocab_size"]  # every sampled id decodes to a token
    assert llm["bos_token_id"] == ids("<|begin_of_text|>")
    eos = [ids(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
    assert llm["eos_token_id"] == eos
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == eos
    assert tokenizer.eos_token == "<|eot_id|>"
    # Plain text gets a BOS, as Llama 3.1's tokenizer gives it.
    assert tokenizer("Hello").input_ids[0] == ids("<|begin_of_text|>")
    marked = ids(["<img>", "<image>", "</img>", "<|eot_id|>"])
    assert tokenizer.decode(marked, skip_special_tokens=True) == ""


# --- chat template ------------------------------------------------------------------------------

USER = {"role": "user", "content": "Hi"}
HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"


def test_llama_31_turns(tokenizer):
    system = {"role": "system", "content": "Be brief."}
    answer = {"role": "assistant", "content": "Hello"}
    text = render(tokenizer, [system, USER, answer, {"role": "user", "content": "Again"}])
    assert text == (
        "<|begin_of_text|>"
        + HEADER.format("system")
        + "Be brief.<|eot_id|>"
        + HEADER.format("user")
        + "Hi<|eot_id|>"
        + HEADER.format("assistant")
        + "Hello<|eot_id|>"
        + HEADER.format("user")
        + "Again<|eot_id|>"
        + HEADER.format("assistant")
    )
    assert not render(tokenizer, [USER], add_generation_prompt=False).endswith(
        HEADER.format("assistant")
    )


def test_images_come_before_the_text_of_their_message(tokenizer):
    """As vLLM gives a template that takes content as a string: an `<image>` line per image,
    then the texts, a line each."""
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image"},
        {"type": "text", "text": "with"},
        {"type": "image_url", "image_url": {"url": "a"}},
    ]
    text = render(tokenizer, [{"role": "user", "content": content}])
    assert HEADER.format("user") + "<image>\n<image>\nCompare\nwith<|eot_id|>" in text
    as_string = render(tokenizer, [{"role": "user", "content": "<image>\n<image>\nCompare\nwith"}])
    assert text == as_string


def test_the_template_does_not_loop_over_content_parts():
    """vLLM passes content as a list of parts, in the client's order, to a template that loops
    over them; this one must get strings, with images first."""
    import jinja2

    ast = jinja2.Environment().parse(nemotron.CHAT_TEMPLATE)
    loops = [node.iter for node in ast.find_all(jinja2.nodes.For)]
    assert [loop.name for loop in loops if isinstance(loop, jinja2.nodes.Name)] == ["messages"]
    assert all(isinstance(loop, jinja2.nodes.Name) for loop in loops)


def test_only_the_first_message_may_be_a_system_message(tokenizer):
    with pytest.raises(TemplateError, match="first message"):
        render(tokenizer, [USER, {"role": "system", "content": "late"}])


def test_the_saved_template_is_the_builders(model_dir):
    assert (model_dir / "chat_template.jinja").read_text() == nemotron.CHAT_TEMPLATE


# --- builds -------------------------------------------------------------------------------------


def test_builds_are_identical(model_dir, tmp_path):
    again = nemotron.ensure_nemotron_model(tmp_path)
    assert again.name == model_dir.name
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_a_complete_model_is_reused(model_dir):
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert nemotron.ensure_nemotron_model(model_dir.parent.parent) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before
