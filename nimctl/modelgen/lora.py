"""Offline builder of PEFT LoRA adapters for the tiny Idefics3 model (`builtin:tiny-idefics3`).

An adapter is what `peft.LoraConfig` + `save_pretrained` would write for that model:
`adapter_config.json` with PEFT's keys and `adapter_model.safetensors` with PEFT's tensor names
(`base_model.model.<module>.lora_A.weight`, shape `(r, in)`; `lora_B.weight`, shape `(out, r)`).
PEFT itself is not needed: the format is a few JSON keys and two tensors per module.

Trained adapters start with `lora_B = 0`; these draw both matrices from a seed and scale them
so that the update dwarfs the base model's small random weights, so greedy output with the
adapter differs from the base model's (the e2e tests rely on it). Nothing here imports vLLM.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from nimctl.modelgen.idefics3 import _TEXT_CONFIG, TINY_MODEL_NAME

# Llama's linear layers, as PEFT's target_modules names them, and their (in, out) features.
_HIDDEN = int(_TEXT_CONFIG["hidden_size"])
_KV = _HIDDEN // int(_TEXT_CONFIG["num_attention_heads"]) * int(_TEXT_CONFIG["num_key_value_heads"])
_MLP = int(_TEXT_CONFIG["intermediate_size"])
MODULE_SHAPES: dict[str, tuple[str, int, int]] = {
    "q_proj": ("self_attn", _HIDDEN, _HIDDEN),
    "k_proj": ("self_attn", _HIDDEN, _KV),
    "v_proj": ("self_attn", _HIDDEN, _KV),
    "o_proj": ("self_attn", _HIDDEN, _HIDDEN),
    "gate_proj": ("mlp", _HIDDEN, _MLP),
    "up_proj": ("mlp", _HIDDEN, _MLP),
    "down_proj": ("mlp", _MLP, _HIDDEN),
}
DEFAULT_TARGETS = tuple(MODULE_SHAPES)
# A module the model does not have: vLLM refuses an adapter with weights for it.
UNKNOWN_MODULE = "nimctl_missing_proj"
_LANGUAGE_MODEL = "model.text_model"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def write_adapter(
    out: Path,
    *,
    seed: int,
    rank: int = 8,
    alpha: int | None = None,
    targets: Sequence[str] = DEFAULT_TARGETS,
    unknown_module: bool = False,
) -> Path:
    """Write an adapter into directory `out` (created) and return it.

    `seed` picks the weights: same arguments, same bytes. `unknown_module` adds weights for a
    module the tiny model does not have (a misfit adapter, refused at load); a `rank` above the
    server's NIM_MAX_LORA_RANK makes the other kind of misfit.
    """
    import torch
    from safetensors.torch import save_file

    unknown = [name for name in targets if name not in MODULE_SHAPES]
    if unknown:
        raise ValueError(f"unknown target module(s) {unknown}; known: {list(MODULE_SHAPES)}")
    alpha = 2 * rank if alpha is None else alpha
    shapes = {name: MODULE_SHAPES[name] for name in targets}
    if unknown_module:
        shapes[UNKNOWN_MODULE] = ("self_attn", _HIDDEN, _HIDDEN)
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(int(_TEXT_CONFIG["num_hidden_layers"])):
        for name, (block, fan_in, fan_out) in shapes.items():
            prefix = f"base_model.model.{_LANGUAGE_MODEL}.layers.{layer}.{block}.{name}"
            # Unit-variance entries: B @ A * alpha / r has entries of about 2 * sqrt(r), against
            # base weights of about 0.02, so the adapter decides the output.
            lora_a = torch.randn(rank, fan_in, generator=generator)
            lora_b = torch.randn(fan_out, rank, generator=generator)
            tensors[f"{prefix}.lora_A.weight"] = lora_a.contiguous()
            tensors[f"{prefix}.lora_B.weight"] = lora_b.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config = adapter_config(rank, alpha, [*shapes])
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def adapter_config(rank: int, alpha: int, targets: Sequence[str]) -> dict[str, object]:
    """The keys `peft.LoraConfig.save_pretrained` writes for a plain LoRA of a causal LM."""
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": TINY_MODEL_NAME,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": rank,
        "rank_pattern": {},
        "revision": None,
        "target_modules": sorted(targets),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }
