"""Offline builders of tiny twins of Mistral Small 4 (119B 2603) and Mistral Large 3 (675B 2512)
on their real vLLM architecture.

Both real checkpoints ship in Mistral's native format (`params.json`, `tekken.json`,
`consolidated.safetensors`) and their seed profiles serve them with `tokenizer_mode`,
`config_format` and `load_format` "mistral". From `params.json` vLLM derives the same classes for
these twins as for the real models: `PixtralForConditionalGeneration` (a Pixtral vision encoder,
patch merger and adapter) over `MistralLarge3ForCausalLM` (DeepSeek-V3's MLA attention, a mixture
of experts with a shared expert, yarn RoPE, Llama 4 attention scaling). mistral_common renders
every prompt from the Tekken tokenizer: images as [IMG] grids, tools and [TOOL_CALLS] with its own
grammar, and for Small 4 (Tekken v15) `reasoning_effort` as model settings. So the seeds' engine
arguments run unchanged.

The two differ where the real models do: Small 4 is a hybrid reasoning model (Tekken v15, whose
model settings take a reasoning effort); Large 3 is an instruct model on DeepSeek-V3's geometry
(Tekken v13, no model settings, so a `reasoning_effort` is refused by the tokenizer; dense layers
before the experts; experts routed by group). Large 3's real `params.json` could not be read
offline: its DeepSeek-V3 geometry (dense first layers, grouped routing, latent 512 + 64) is
likely, not verified, and its Tekken version is inferred from its having no reasoning mode.

What differs from the real checkpoints, and why:

- sizes: 2 layers, dim 128, 2 heads, 4 experts top-2 (Small 4: 36 layers, dim 4096, 32 heads,
  128 experts top-4), small enough to build in seconds and run on 2 CPU cores;
- `kv_lora_rank` 512 for both, where the real Small 4 has 256: vLLM's CPU MLA decode kernel is
  compiled only for a 576-wide latent (512 + rope 64). With 256 the server starts and reports
  healthy, then its engine dies at the first decoded token ("Unsupported block size: 16");
- yarn over 4096 positions with factor 2 (the real ones: 128 over 8192), for an 8192 context;
- vocabulary: 1024 ids, a byte-level BPE learned here (`nimctl.modelgen.tekken`) with Mistral's
  control tokens, not the real 131k-id Tekken vocabulary; so token ids and counts differ;
- images: at most 64 x 64 pixels (larger ones are scaled down by mistral_common), so one image is
  2 x 2 tokens after the 2 x 2 patch merge, plus its [IMG_BREAK] and [IMG_END];
- random weights: callers assert on structure (token counts, fields, finish reasons), never words.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nimctl.modelgen.cache import ensure_built, versioned_dir
from nimctl.modelgen.files import save_seeded_weights, write_license
from nimctl.modelgen.tekken import VOCAB_SIZE, control_token_id, write_tekken

# mistral_common's image encoder: 16 px patches, 2 x 2 of them merged into one token, and images
# scaled down to at most 64 px so that one image costs a handful of tokens on a CPU.
IMAGE_SECTION: dict[str, int] = {
    "image_patch_size": 16,
    "max_image_size": 64,
    "spatial_merge_size": 2,
}

_VISION_ENCODER: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,  # one 64-wide head: the 2D RoPE and CPU SDPA both take it
    "patch_size": IMAGE_SECTION["image_patch_size"],
    "image_size": IMAGE_SECTION["max_image_size"],
    "max_image_size": IMAGE_SECTION["max_image_size"],
    "intermediate_size": 128,
    "num_channels": 3,
    "rope_theta": 10000.0,
    "mm_projector_id": "patch_merge",
    "add_pre_mm_projector_layer_norm": True,
    "adapter_bias": False,
    "spatial_merge_size": IMAGE_SECTION["spatial_merge_size"],
    "image_token_id": control_token_id("[IMG]"),
    "image_break_token_id": control_token_id("[IMG_BREAK]"),
    "image_end_token_id": control_token_id("[IMG_END]"),
}

SMALL4_PARAMS: dict[str, Any] = {
    "dim": 128,
    "n_layers": 2,
    "head_dim": 128,
    "hidden_dim": 256,
    "n_heads": 2,
    "n_kv_heads": 2,
    "norm_eps": 1e-5,
    "vocab_size": VOCAB_SIZE,
    "rope_theta": 10000.0,
    # Without them vLLM looks for a Hugging Face config.json and, failing, assumes 128000.
    "max_position_embeddings": 8192,
    "max_seq_len": 8192,
    "tied_embeddings": False,
    # MLA: queries through a low-rank bottleneck; keys and values through a shared latent of
    # kv_lora_rank plus one rope part (see the module docstring for 512).
    "q_lora_rank": 64,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 64,
    "kv_lora_rank": 512,
    "v_head_dim": 128,
    # A shared expert is what makes vLLM pick MistralLarge3ForCausalLM over Mixtral; expert
    # sizes stay multiples of 32 for vLLM's CPU MoE kernel.
    "moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "expert_hidden_dim": 64,
        "first_k_dense_replace": 0,
        "num_shared_experts": 1,
        "routed_scale": 1.0,
        "num_expert_groups": 1,
        "num_expert_groups_per_tok": 1,
        "route_every_n": 1,
    },
    "yarn": {
        "factor": 2.0,
        "original_max_position_embeddings": 4096,
        "beta": 32.0,
        "alpha": 1.0,
        "apply_scale": False,
    },
    # vLLM asserts it for a MoE with shared experts (adapt_config_dict), as Mistral 4 has it.
    "llama_4_scaling": {"original_max_position_embeddings": 4096, "beta": 0.1},
    "vision_encoder": _VISION_ENCODER,
}


def _large3_params() -> dict[str, Any]:
    """Small 4's tiny sizes on DeepSeek-V3's layout, as Large 3 (675B, 41B active) has it: the
    first layer dense (its `feed_forward`), the next a mixture whose experts are routed in two
    groups, one chosen per token, with routed outputs scaled as DeepSeek-V3 scales them."""
    params = copy.deepcopy(SMALL4_PARAMS)
    params["moe"] |= {
        "first_k_dense_replace": 1,
        "num_expert_groups": 2,
        "num_expert_groups_per_tok": 1,
        "routed_scale": 2.5,
    }
    return params


@dataclass(frozen=True)
class MistralTwin:
    """One tiny twin: its directory name and build version, tokenizer version and weights."""

    name: str
    version: int
    tokenizer_version: str
    seed: int
    params: dict[str, Any]
    title: str  # the real model, for the LICENSE text

    def model_dir(self, cache_dir: Path) -> Path:
        return versioned_dir(cache_dir, self.name, self.version)


SMALL4 = MistralTwin(
    name="nimctl-tiny-mistral-small4",
    version=1,
    tokenizer_version="v15",  # model settings: reasoning_effort "none" or "high"
    seed=20260302,
    params=SMALL4_PARAMS,
    title="Mistral Small 4",
)
LARGE3 = MistralTwin(
    name="nimctl-tiny-mistral-large3",
    version=1,
    tokenizer_version="v13",  # an instruct model: no model settings
    seed=20251202,
    params=_large3_params(),
    title="Mistral Large 3",
)

_LICENSE_TEXT = """\
This directory was generated offline by nimctl (nimctl.modelgen.mistral). It contains a randomly
initialised model of {title}'s architecture in Mistral's native format (a Pixtral vision
encoder over an MLA and mixture-of-experts language model, about 1.3 million parameters) and a
Tekken tokenizer whose byte-level BPE merges were learned from a few sentences written for
nimctl. It was not trained on any data set, is not derived from any published checkpoint or
tokenizer vocabulary, and produces meaningless text. It exists only to exercise serving
software in tests.
"""
_REQUIRED_FILES = ("tekken.json", "params.json", "consolidated.safetensors", "LICENSE")


def ensure_mistral_model(cache_dir: Path, twin: MistralTwin) -> Path:
    """The twin's directory, built first if absent or incomplete; every build is byte-identical."""

    def build(out: Path) -> None:
        write_tekken(out, twin.tokenizer_version, image=IMAGE_SECTION)
        (out / "params.json").write_text(json.dumps(twin.params, indent=2) + "\n", "utf-8")
        save_seeded_weights(out / "consolidated.safetensors", weight_shapes(twin.params), twin.seed)
        title = f"nimctl tiny {twin.title} test model (generated)"
        write_license(out, title, _LICENSE_TEXT.format(title=twin.title))

    return ensure_built(
        twin.model_dir(cache_dir),
        build,
        version=twin.version,
        required=_REQUIRED_FILES,
        marker={"name": twin.name},
    )


def weight_shapes(params: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Mistral's consolidated tensor names and their shapes (out x in), in a fixed order.

    vLLM's `MistralLarge3ForCausalLM` maps the language-model names onto DeepSeek-V3's modules and
    `PixtralForConditionalGeneration.load_weights` the vision ones; a vision name it does not know
    is skipped silently, leaving that weight uninitialised, so the names matter.
    """
    p, moe, vision = params, params["moe"], params["vision_encoder"]
    dim, heads = p["dim"], p["n_heads"]
    q_head = p["qk_nope_head_dim"] + p["qk_rope_head_dim"]
    kv_up = p["qk_nope_head_dim"] + p["v_head_dim"]
    expert = moe["expert_hidden_dim"]
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (VOCAB_SIZE, dim)}
    for layer in range(p["n_layers"]):
        at = f"layers.{layer}"
        shapes |= {
            f"{at}.attention_norm.weight": (dim,),
            f"{at}.attention.wq_a.weight": (p["q_lora_rank"], dim),
            f"{at}.attention.q_a_norm.weight": (p["q_lora_rank"],),
            f"{at}.attention.wq_b.weight": (heads * q_head, p["q_lora_rank"]),
            f"{at}.attention.wkv_a_with_mqa.weight": (
                p["kv_lora_rank"] + p["qk_rope_head_dim"],
                dim,
            ),
            f"{at}.attention.kv_a_norm.weight": (p["kv_lora_rank"],),
            f"{at}.attention.wkv_b.weight": (heads * kv_up, p["kv_lora_rank"]),
            f"{at}.attention.wo.weight": (dim, heads * p["v_head_dim"]),
            f"{at}.ffn_norm.weight": (dim,),
        }
        if layer < moe["first_k_dense_replace"]:
            shapes |= _swiglu(f"{at}.feed_forward", dim, p["hidden_dim"])
            continue
        shapes[f"{at}.gate.weight"] = (moe["num_experts"], dim)
        shared = expert * moe["num_shared_experts"]
        shapes |= _swiglu(f"{at}.shared_experts", dim, shared)
        for e in range(moe["num_experts"]):
            shapes |= _swiglu(f"{at}.experts.{e}", dim, expert)
    shapes |= {"norm.weight": (dim,), "output.weight": (VOCAB_SIZE, dim)}

    hv, patch = vision["hidden_size"], vision["patch_size"]
    shapes |= {
        "vision_encoder.patch_conv.weight": (hv, vision["num_channels"], patch, patch),
        "vision_encoder.ln_pre.weight": (hv,),
    }
    for layer in range(vision["num_hidden_layers"]):
        at = f"vision_encoder.transformer.layers.{layer}"
        shapes |= {f"{at}.attention.{w}.weight": (hv, hv) for w in ("wq", "wk", "wv", "wo")}
        shapes |= _swiglu(f"{at}.feed_forward", hv, vision["intermediate_size"])
        shapes |= {f"{at}.attention_norm.weight": (hv,), f"{at}.ffn_norm.weight": (hv,)}
    merged = hv * vision["spatial_merge_size"] ** 2
    shapes |= {
        "pre_mm_projector_norm.weight": (hv,),
        "patch_merger.merging_layer.weight": (hv, merged),
        "vision_language_adapter.w_in.weight": (dim, hv),
        "vision_language_adapter.w_out.weight": (dim, dim),
    }
    return shapes


def _swiglu(prefix: str, dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.w1.weight": (hidden, dim),
        f"{prefix}.w2.weight": (dim, hidden),
        f"{prefix}.w3.weight": (hidden, dim),
    }
