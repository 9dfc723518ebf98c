"""Offline builder of a tiny twin of Llama 3.1 Nemotron Nano VL 8B on its real architecture.

vLLM serves it with the class it uses for the real checkpoint, `LlamaNemotronVLChatModel`
(architecture `Llama_Nemotron_Nano_VL`): a Llama 3.1 text model, a C-RADIO vision tower built
through `AutoModel.from_config`, pixel shuffle v2 and the `mlp1` projector, and vLLM's own
InternVL-style tiling (1 to `max_num_tiles` tiles by aspect ratio, plus a thumbnail). Like the
real checkpoint it needs `trust_remote_code`: its configuration, vision tower and image processor
are Python files in the model directory, written for nimctl (`nemotron_remote/`). What is tiny,
and why:

- sizes: 2 Llama layers (hidden 128, head_dim 64; vLLM's CPU attention takes 32 or more), one
  RADIO layer of width 32; bf16, because vLLM casts the tower's output to bf16 before `mlp1`;
- tiles: 64 x 64 pixels instead of 512, patch 16, so a tile is (64/16)^2 x 0.5^2 = 4 tokens
  (the real one: 256); the tile count per image follows the real rule, up to 12 plus thumbnail;
- vision tower: transformers' `RadioModel` behind a call adapter, since the real
  `vision_config` points at C-RADIO code in another hub repository;
- vocabulary: a 1,024-token byte-level BPE learned here, with Llama 3.1's special tokens in
  their real order and the VL tokens (`<image>`, `<img>`, `</img>`, `<quad>`, ...); token ids
  therefore differ from the real ones;
- chat template: written for nimctl (the real one was not available), Llama 3.1 turns; it never
  loops over content parts, so vLLM passes content as a string with every image of a message
  before its text, as the seed asks clients to send them.

Random weights: callers assert on structure (token counts, fields, finish reasons), never words.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.modelgen.bpe import train_bpe
from nimctl.modelgen.cache import ensure_built, versioned_dir
from nimctl.modelgen.files import write_license

if TYPE_CHECKING:
    from tokenizers import Tokenizer

NEMOTRON_MODEL_NAME = "nimctl-tiny-nemotron-nano-vl"
NEMOTRON_MODEL_VERSION = 1
_SEED = 20250603
_VOCAB_SIZE = 1024

BEGIN_OF_TEXT, END_OF_TEXT = "<|begin_of_text|>", "<|end_of_text|>"
START_HEADER, END_HEADER = "<|start_header_id|>", "<|end_header_id|>"
EOM, EOT = "<|eom_id|>", "<|eot_id|>"
PAD = "<|finetune_right_pad_id|>"
IMAGE, IMG_START, IMG_END = "<image>", "<img>", "</img>"
# Llama 3.1's special tokens in its vocabulary's order (ids 128000-128010), then the VL tokens
# of Nemotron Nano VL's training recipe (Megatron-LM's llama_3p1_nemotron_nano_vl_8b_v1).
LLAMA_SPECIAL = (
    BEGIN_OF_TEXT,
    END_OF_TEXT,
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    PAD,
    "<|reserved_special_token_2|>",
    START_HEADER,
    END_HEADER,
    EOM,
    EOT,
    "<|python_tag|>",
)
VL_SPECIAL = (IMAGE, IMG_START, IMG_END, "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")
# Llama 3.1's generation stops at any of these.
_EOS = (END_OF_TEXT, EOM, EOT)

# 64-pixel tiles of 16-pixel patches, pixel-shuffled by 0.5: 4 tokens a tile.
TILE_SIZE = 64
PATCH_SIZE = 16
DOWNSAMPLE_RATIO = 0.5
MAX_NUM_TILES = 12
_VIT_HIDDEN = 32
_PROJECTOR_HIDDEN = 64
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

_LLM_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": _VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    # Llama 3.1's rotary embedding: theta 500000 with llama3 frequency scaling.
    "rope_parameters": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
}
_VISION_CONFIG: dict[str, Any] = {
    "model_type": "radio",
    # Resolved against the model directory (configuration.py sets `_name_or_path`).
    "auto_map": {"AutoModel": "radio_twin.TwinRadioModel"},
    "hidden_size": _VIT_HIDDEN,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "mlp_ratio": 4.0,
    "patch_size": PATCH_SIZE,
    "image_size": TILE_SIZE,
    "max_img_size": 2 * TILE_SIZE,
    "num_cls_tokens": 3,
    "num_registers": 7,
    "summary_idxs": [0, 1],
    "norm_mean": _CLIP_MEAN,
    "norm_std": _CLIP_STD,
    "dtype": "bfloat16",
}
_TOP_CONFIG: dict[str, Any] = {
    "architectures": ["Llama_Nemotron_Nano_VL"],
    "auto_map": {"AutoConfig": "configuration.NimctlNemotronVLConfig"},
    "model_type": "Llama_Nemotron_Nano_VL",
    "force_image_size": TILE_SIZE,
    "downsample_ratio": DOWNSAMPLE_RATIO,
    "ps_version": "v2",
    "template": "llama3p1",
    "image_tag_type": "internvl",
    "vit_hidden_size": _VIT_HIDDEN,
    "projector_hidden_size": _PROJECTOR_HIDDEN,
    "dtype": "bfloat16",
    "tie_word_embeddings": False,
}
_IMAGE_PROCESSOR: dict[str, Any] = {
    "auto_map": {"AutoImageProcessor": "image_processing.NimctlNemotronImageProcessor"},
    "image_processor_type": "NimctlNemotronImageProcessor",
    "image_size": TILE_SIZE,
    "max_num_tiles": MAX_NUM_TILES,
    "use_thumbnail": True,
    "norm_mean": _CLIP_MEAN,
    "norm_std": _CLIP_STD,
}

# Llama 3.1 turns. Content is used as a string only (no loop over content parts), so vLLM
# detects the 'string' content format and gives each message its image placeholders first, one
# `<image>` a line, then its texts joined by newlines; outside vLLM, a list of parts renders the
# same way. A `{% for %}` over the parts would make vLLM keep the client's order instead.
CHAT_TEMPLATE = r"""{%- macro render(content) -%}
{%- if content is none -%}
{%- elif content is string -%}{{ content | trim }}
{%- else -%}
{%- set images = content | selectattr('type', 'in', ['image', 'image_url']) | list -%}
{%- set texts = content | selectattr('type', 'equalto', 'text') | map(attribute='text') | list -%}
{{- ('<image>\n' * (images | length) + texts | join('\n')) | trim -}}
{%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- for message in messages -%}
{%- if message['role'] == 'system' and not loop.first -%}
{{- raise_exception('Only the first message may be a system message.') -}}
{%- endif -%}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' -}}
{{- render(message['content']) + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
"""

_CORPUS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please describe the image in one short sentence.",
    'How many times more "FP16 Tensor Core" does H100 SXM have than H100 NVL?',
    "Extract the table from the image and return it as markdown with its header row.",
    "What is the weather like in Paris today? It is sunny and warm.",
    "Create a detailed itinerary for a week-long adventure trip through Southeast Asia.",
    "The document has a title, two charts, a table of numbers and a signature.",
    "Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10 appear in many documents.",
    "The server is healthy, the model is ready and the queue is empty.",
    "She opened the window, looked at the mountains and smiled at the blue sky.",
    "Every answer should be short, clear, correct and kind to the person who asked.",
    "| Column | Value |\n|---|---|\n| Memory | 80 GB |\n| Power | 700 W |",
)
_REMOTE_CODE_DIR = Path(__file__).with_name("nemotron_remote")
REMOTE_CODE = ("configuration.py", "radio_twin.py", "image_processing.py")
_LICENSE_TITLE = "nimctl tiny Llama 3.1 Nemotron Nano VL test model (generated)"
_LICENSE_TEXT = """\
This directory was generated offline by nimctl (nimctl.modelgen.nemotron). It contains a randomly
initialised model of Llama 3.1 Nemotron Nano VL's architecture (Llama_Nemotron_Nano_VL: a Llama
text model, a C-RADIO vision tower and a projector, about 600 thousand parameters), Python
configuration, vision and image-processing code written for nimctl, and a byte-level BPE
tokenizer trained on a few sentences written for nimctl, with Llama 3.1's special token names.
It was not trained on any data set, is not derived from any published checkpoint, code or
tokenizer vocabulary, and produces meaningless text. It exists only to exercise serving
software in tests.
"""
_REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    *REMOTE_CODE,
    "LICENSE",
)


def nemotron_model_dir(cache_dir: Path) -> Path:
    return versioned_dir(cache_dir, NEMOTRON_MODEL_NAME, NEMOTRON_MODEL_VERSION)


def ensure_nemotron_model(cache_dir: Path) -> Path:
    """The model directory, built first if absent or incomplete; every build is identical."""
    return ensure_built(
        nemotron_model_dir(cache_dir),
        _build,
        version=NEMOTRON_MODEL_VERSION,
        required=_REQUIRED_FILES,
        marker={"name": NEMOTRON_MODEL_NAME},
    )


def build_tokenizer() -> Tokenizer:
    """Byte-level BPE with Llama 3.1's specials, the VL tokens, and a BOS post-processor (Llama
    3.1's tokenizer adds `<|begin_of_text|>` to plain text; chat prompts carry it already)."""
    from tokenizers import processors

    tok = train_bpe(
        _CORPUS, _VOCAB_SIZE, LLAMA_SPECIAL + VL_SPECIAL, (), filler="<|nimctl_reserved_{}|>"
    )
    bos = (BEGIN_OF_TEXT, tok.token_to_id(BEGIN_OF_TEXT))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BEGIN_OF_TEXT} $A",
        pair=f"{BEGIN_OF_TEXT} $A {BEGIN_OF_TEXT} $B",
        special_tokens=[bos],
    )
    return tok


def config_dict(tok: Tokenizer) -> dict[str, Any]:
    """config.json: the real top-level keys, with the token ids of this tokenizer."""
    ids = tok.token_to_id
    llm = {
        **_LLM_CONFIG,
        "bos_token_id": ids(BEGIN_OF_TEXT),
        "eos_token_id": [ids(t) for t in _EOS],
        "pad_token_id": ids(PAD),
    }
    return {**_TOP_CONFIG, "llm_config": llm, "vision_config": _VISION_CONFIG}


def _build(out: Path) -> None:
    tok = build_tokenizer()
    _save_tokenizer(tok, out)
    config = config_dict(tok)
    _write_json(out / "config.json", config)
    _write_json(out / "preprocessor_config.json", _IMAGE_PROCESSOR)
    llm = config["llm_config"]
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": llm["bos_token_id"],
            "eos_token_id": llm["eos_token_id"],
            "pad_token_id": llm["pad_token_id"],
        },
    )
    for name in REMOTE_CODE:
        (out / name).write_bytes((_REMOTE_CODE_DIR / name).read_bytes())
    _save_weights(out / "model.safetensors")
    write_license(out, _LICENSE_TITLE, _LICENSE_TEXT)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _save_tokenizer(tok: Tokenizer, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BEGIN_OF_TEXT,
        eos_token=EOT,
        pad_token=PAD,
        model_max_length=_LLM_CONFIG["max_position_embeddings"],
        chat_template=CHAT_TEMPLATE,
        # vLLM warns that a BPE tokenizer ignores the default True.
        clean_up_tokenization_spaces=False,
    )
    tokenizer.save_pretrained(str(out))


def _save_weights(path: Path) -> None:
    """The checkpoint's tensor names: `language_model.*` (Llama), `vision_model.*` (C-RADIO,
    input-conditioner buffers included as in the real one; vLLM skips them) and `mlp1.*`."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM, RadioConfig, RadioModel

    llm_config = LlamaConfig(**{k: v for k, v in _LLM_CONFIG.items() if k != "model_type"})
    vision_config = RadioConfig(
        **{k: v for k, v in _VISION_CONFIG.items() if k not in ("model_type", "auto_map")}
    )
    shuffled = _VIT_HIDDEN * int(1 / DOWNSAMPLE_RATIO) ** 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        parts = {
            "language_model.": LlamaForCausalLM(llm_config),
            "vision_model.": RadioModel(vision_config),
            # vLLM's projector layout (LayerNorm, Linear, GELU, Linear).
            "mlp1.": torch.nn.Sequential(
                torch.nn.LayerNorm(shuffled),
                torch.nn.Linear(shuffled, _PROJECTOR_HIDDEN),
                torch.nn.GELU(),
                torch.nn.Linear(_PROJECTOR_HIDDEN, _LLM_CONFIG["hidden_size"]),
            ),
        }
    tensors = {}
    for prefix, module in parts.items():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor = tensor.to(torch.bfloat16)
            tensors[prefix + name] = tensor.contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})
