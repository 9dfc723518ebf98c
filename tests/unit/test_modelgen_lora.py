"""Generated LoRA adapters for the tiny model: PEFT's layout, the base model's shapes, vLLM's
loader accepts them (and refuses the misfits), deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from nimctl.modelgen.idefics3 import TINY_MODEL_NAME, ensure_tiny_model
from nimctl.modelgen.lora import UNKNOWN_MODULE, write_adapter


@pytest.fixture(scope="module")
def base_shapes(tmp_path_factory) -> dict[str, list[int]]:
    model = ensure_tiny_model(tmp_path_factory.mktemp("cache"))
    with safe_open(str(model / "model.safetensors"), "pt") as f:
        return {key: f.get_slice(key).get_shape() for key in f.keys()}  # noqa: SIM118


def test_config_has_peft_keys(tmp_path: Path):
    config = json.loads((write_adapter(tmp_path / "a", seed=1) / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert config["base_model_name_or_path"] == TINY_MODEL_NAME
    assert set(config["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip
    assert config["bias"] == "none" and config["use_dora"] is False


def test_tensors_fit_the_base_model(tmp_path: Path, base_shapes):
    path = write_adapter(tmp_path / "a", seed=1, rank=4)
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert len(keys) == 2 * 2 * 7  # layers x modules x (A, B)
        for key in keys:
            assert key.startswith("base_model.model.model.text_model.layers.")
            module = key.removeprefix("base_model.model.").rsplit(".", 2)[0]
            out_features, in_features = base_shapes[f"{module}.weight"]
            shape = f.get_slice(key).get_shape()
            assert shape == ([4, in_features] if ".lora_A." in key else [out_features, 4]), key


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path):
    def digest(path: Path) -> str:
        return hashlib.sha256((path / "adapter_model.safetensors").read_bytes()).hexdigest()

    one = write_adapter(tmp_path / "one", seed=7)
    again = write_adapter(tmp_path / "again", seed=7)
    other = write_adapter(tmp_path / "other", seed=8)
    assert digest(one) == digest(again) != digest(other)


def test_unknown_target_is_refused_by_the_builder(tmp_path: Path):
    with pytest.raises(ValueError, match="nope_proj"):
        write_adapter(tmp_path / "a", seed=1, targets=["nope_proj"])


# vLLM's own loader (what its worker runs at add_lora), without an engine.
vllm_lora = pytest.importorskip("vllm.lora.lora_model")
from vllm.config.lora import LoRAConfig  # noqa: E402
from vllm.lora.peft_helper import PEFTHelper  # noqa: E402

# What vLLM's LoRA manager expects for the tiny Idefics3 (its packed modules unpacked), as its
# refusal of a misfit adapter lists them.
EXPECTED = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _load(path: Path, max_rank: int = 8) -> object:
    helper = PEFTHelper.from_local_dir(str(path), 8192)
    helper.validate_legal(LoRAConfig(max_lora_rank=max_rank))
    return vllm_lora.LoRAModel.from_local_checkpoint(
        str(path), EXPECTED, peft_helper=helper, lora_model_id=1, device="cpu"
    )


def test_vllm_loads_the_adapter(tmp_path: Path):
    lora = _load(write_adapter(tmp_path / "a", seed=1))
    assert "model.text_model.layers.1.self_attn.q_proj" in lora.loras  # type: ignore[attr-defined]


def test_vllm_refuses_the_misfits(tmp_path: Path):
    with pytest.raises(ValueError, match="LoRA rank 16 is greater than max_lora_rank 8"):
        _load(write_adapter(tmp_path / "big", seed=1, rank=16))
    with pytest.raises(ValueError, match=UNKNOWN_MODULE):
        _load(write_adapter(tmp_path / "odd", seed=1, unknown_module=True))
