"""Offline builder of a tiny twin of Qwen3.5-397B-A17B on its real architecture.

vLLM serves it with the class it uses for the real checkpoint, `Qwen3_5MoeForConditionalGeneration`
(gated delta-net and full-attention layers, mixture of experts with a shared expert, the Qwen3-VL
vision tower, M-RoPE), and with the real processors (`Qwen2VLImageProcessor`,
`Qwen3VLVideoProcessor`, timestamps per video frame). What is tiny, and why:

- sizes: 4 layers (3 linear, 1 full, the real 3:1 pattern), hidden 64, 4 experts top-2; vLLM's
  CPU kernels need bf16, gated-delta-net head dims of 64 or 128 and MoE sizes that are multiples
  of 32, so those are the smallest that run;
- vocabulary: a 2,048-token byte-level BPE learned here, with Qwen's special tokens (the real
  248k-token vocabulary is not available offline); token ids therefore differ from the real ones;
- processors: the real classes and keys, with small pixel budgets so a 64 x 64 image is 4 tokens;
- chat template: written for nimctl (`qwen35_template.jinja`), behaving as the real one does.

Random weights: callers assert on structure (token counts, fields, finish reasons), never words.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.modelgen.bpe import train_bpe
from nimctl.modelgen.cache import ensure_built, versioned_dir
from nimctl.modelgen.files import save_pretrained_quietly, write_license

if TYPE_CHECKING:
    from tokenizers import Tokenizer

QWEN35_MODEL_NAME = "nimctl-tiny-qwen3.5"
QWEN35_MODEL_VERSION = 1
_SEED = 20260301
_VOCAB_SIZE = 2048

ENDOFTEXT = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
# Qwen's special tokens, in the real vocabulary's order (its ids 248044 onwards).
_SPECIAL = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    VISION_START,
    VISION_END,
    "<|vision_pad|>",
    IMAGE_PAD,
    VIDEO_PAD,
)
# Not special in the real tokenizer either: decoded text keeps them, for the qwen3 reasoning
# parser and the qwen3_coder tool parser.
_PLAIN = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "linear_num_key_heads": 1,
    "linear_num_value_heads": 2,
    "linear_key_head_dim": 64,
    "linear_value_head_dim": 64,
    "linear_conv_kernel_dim": 4,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    # As the real model: rotary on a quarter of each head, interleaved M-RoPE (t, h, w).
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10000000.0,
        "partial_rotary_factor": 0.25,
        "mrope_section": [2, 3, 3],
        "mrope_interleaved": True,
    },
}
_VISION_CONFIG: dict[str, Any] = {
    "depth": 1,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 1,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 64,
    "num_position_embeddings": 16,
}
# The real processors' keys; pixel budgets small. 64 x 64 -> (64/16)^2 patches / 2^2 = 4 tokens.
_PIXELS: dict[str, Any] = {
    "processor_class": "Qwen3VLProcessor",
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "merge_size": 2,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "resample": 3,
    "rescale_factor": 1 / 255,
}
_IMAGE_PROCESSOR: dict[str, Any] = {
    **_PIXELS,
    "image_processor_type": "Qwen2VLImageProcessorFast",
    "size": {"shortest_edge": 4096, "longest_edge": 65536},
}
_VIDEO_PROCESSOR: dict[str, Any] = {
    **_PIXELS,
    "video_processor_type": "Qwen3VLVideoProcessor",
    "do_sample_frames": True,
    "fps": 2,
    "min_frames": 2,
    "max_frames": 16,
    "size": {"shortest_edge": 4096, "longest_edge": 262144},
}
# The real generation_config.json's sampling defaults (vLLM applies them unless a request sets
# its own): tests pin temperature 0.
_SAMPLING = {"temperature": 0.6, "top_k": 20, "top_p": 0.95}

_CORPUS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please describe the image and the video in one short sentence each.",
    "What is the weather like in Paris today? It is sunny and warm.",
    "Think step by step before you give the final answer to the question.",
    "A video is a sequence of frames; each frame is a picture taken at a moment in time.",
    "The function returns a list of results sorted by their score, highest first.",
    "Call the tool with the name of the city and the unit of temperature.",
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n"
    "</tool_call>",
    "Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10 appear in many documents.",
    "The server is healthy, the model is ready and the queue is empty.",
    "She opened the window, looked at the mountains and smiled at the blue sky.",
    "Every answer should be short, clear, correct and kind to the person who asked.",
)
_TEMPLATE_FILE = Path(__file__).with_name("qwen35_template.jinja")
_LICENSE_TITLE = "nimctl tiny Qwen3.5 test model (generated)"
_LICENSE_TEXT = """\
This directory was generated offline by nimctl (nimctl.modelgen.qwen35). It contains a randomly
initialised model of Qwen3.5's architecture (Qwen3_5MoeForConditionalGeneration, about 600
thousand parameters) and a byte-level BPE tokenizer trained on a few sentences written for
nimctl, with Qwen's special token names. It was not trained on any data set, is not derived from
any published checkpoint or tokenizer vocabulary, and produces meaningless text. It exists only
to exercise serving software in tests.
"""
_REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "LICENSE",
)


def chat_template() -> str:
    return _TEMPLATE_FILE.read_text(encoding="utf-8")


def qwen35_model_dir(cache_dir: Path) -> Path:
    return versioned_dir(cache_dir, QWEN35_MODEL_NAME, QWEN35_MODEL_VERSION)


def ensure_qwen35_model(cache_dir: Path) -> Path:
    """The model directory, built first if absent or incomplete; every build is identical."""
    return ensure_built(
        qwen35_model_dir(cache_dir),
        _build,
        version=QWEN35_MODEL_VERSION,
        required=_REQUIRED_FILES,
        marker={"name": QWEN35_MODEL_NAME},
    )


def build_tokenizer() -> Tokenizer:
    return train_bpe(_CORPUS, _VOCAB_SIZE, _SPECIAL, _PLAIN)


def _build(out: Path) -> None:
    tok = build_tokenizer()
    _save_tokenizer(tok, out)
    _save_model(tok, out)
    for name, data in (
        ("preprocessor_config.json", _IMAGE_PROCESSOR),
        ("video_preprocessor_config.json", _VIDEO_PROCESSOR),
    ):
        (out / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    write_license(out, _LICENSE_TITLE, _LICENSE_TEXT)


def _save_tokenizer(tok: Tokenizer, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        model_max_length=_TEXT_CONFIG["max_position_embeddings"],
        chat_template=chat_template(),
    )
    tokenizer.save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "Qwen2Tokenizer"  # as the real checkpoint names it
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _save_model(tok: Tokenizer, out: Path) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        Qwen3_5MoeConfig,
        Qwen3_5MoeForConditionalGeneration,
    )

    token_id = tok.token_to_id
    eos = [token_id(IM_END), token_id(ENDOFTEXT)]
    config = Qwen3_5MoeConfig(
        text_config={
            **_TEXT_CONFIG,
            "vocab_size": _VOCAB_SIZE,
            "eos_token_id": eos[0],
            "pad_token_id": token_id(ENDOFTEXT),
        },
        vision_config=_VISION_CONFIG,
        image_token_id=token_id(IMAGE_PAD),
        video_token_id=token_id(VIDEO_PAD),
        vision_start_token_id=token_id(VISION_START),
        vision_end_token_id=token_id(VISION_END),
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    config.architectures = ["Qwen3_5MoeForConditionalGeneration"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = Qwen3_5MoeForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=token_id(ENDOFTEXT), do_sample=True, **_SAMPLING
    )
    save_pretrained_quietly(model, out)
