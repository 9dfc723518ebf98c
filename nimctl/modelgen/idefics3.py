"""Offline builder of the tiny random-weight vision-language model used by demos and e2e tests.

The real NIM models are gigabytes and need a GPU; the control plane only needs *a* model that
vLLM on CPU serves through exactly the same code paths (chat template, image processor, reasoning
and tool parsers). A ~0.5 M parameter Idefics3 with random weights does that in seconds, without
network access and without torchvision (transformers has a PIL-only Idefics3 image processor).

Its output text is junk: callers assert on structure (fields, counts, finish reasons), never words.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.modelgen.bpe import train_bpe
from nimctl.modelgen.cache import ensure_built, versioned_dir
from nimctl.modelgen.files import save_pretrained_quietly, write_license

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TINY_MODEL_NAME = "nimctl-tiny-idefics3"
TINY_MODEL_VERSION = 2

_SEED = 20240601

# Embedding rows; the tokenizer is filled up to exactly this size so that every id the random
# model may sample decodes to a real token.
_VOCAB_SIZE = 576
_VOCAB_MULTIPLE = 64

_BOS = "<|begin_of_text|>"
_EOS = "<end_of_utterance>"
_PAD = "<|pad|>"
_FAKE_IMAGE = "<fake_token_around_image>"
_IMAGE = "<image>"
_GLOBAL_IMAGE = "<global-img>"
# Idefics3Processor looks up a 6 x 6 grid of tile tokens even when image splitting is off.
_GRID = tuple(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))
# Marked non-special (as Qwen3 does) so that decoding with skip_special_tokens keeps them and
# the reasoning / tool parsers can see them in the text.
_THINK = ("<think>", "</think>")
_TOOL_CALL = ("<tool_call>", "</tool_call>")
# Mistral's control tokens, from when a Mistral-format variant of this model stood in for the
# Mistral twins (they now run their real architecture, nimctl.modelgen.mistral). They stay in the
# vocabulary so that this model's token ids, text token counts and cached builds do not change.
_MISTRAL_SPECIAL = (
    "[INST]",
    "[/INST]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[MODEL_SETTINGS]",
    "[/MODEL_SETTINGS]",
)
_MISTRAL_PLAIN = ("[THINK]", "[/THINK]", "[TOOL_CALLS]")

# Text: Llama. head_dim = 128 / 4 = 32 (vLLM's CPU attention rejects head_dim 16).
_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
# Vision: (64 / 16)^2 = 16 patches, pixel-shuffled by scale_factor 2 into 4 tokens per image.
_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 64,
    "patch_size": 16,
}
_SCALE_FACTOR = 2
_IMAGE_SEQ_LEN = 4

_CORPUS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small model can still answer questions, describe images and call tools.",
    "Please describe the image in one short sentence.",
    "What is the weather like in Paris today? It is sunny and warm.",
    "The user asked the assistant to summarize the document and list the key points.",
    "Think step by step before you give the final answer to the question.",
    "The cat is sitting on the mat, and the dog is sleeping in the garden.",
    "Large language models generate text one token at a time.",
    "This picture shows a red car parked in front of a white house.",
    "The function returns a list of results sorted by their score.",
    "Call the tool with the name of the city and the unit of temperature.",
    "The answer is forty two, according to the book that the student read.",
    "Vision language models look at pictures and read the text that comes with them.",
    "Here is the data you requested: the total is one hundred and twenty.",
    "Good morning! How can I help you today? I would like a cup of tea.",
    "The server is healthy, the model is ready and the queue is empty.",
    "We measured the latency of each request and the number of tokens per second.",
    "In the morning the sun rises in the east and sets in the west in the evening.",
    "She opened the window, looked at the mountains and smiled at the blue sky.",
    "The engineer wrote a test that checks the status code and the response fields.",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    '{"name": "search", "arguments": {"query": "open source models", "limit": 5}}',
    "User: What do you see in this image? Assistant: I see a tree, a house and a road.",
    "System: You are a helpful assistant. Answer briefly and honestly.",
    "Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10 appear in many documents.",
    "The river flows through the old town, past the market and under the stone bridge.",
    "Every answer should be short, clear, correct and kind to the person who asked.",
    "The library opens at nine and closes at five, except on Sunday when it is closed.",
)

# Idefics3 turn format. Content may be a string or a list of parts; vLLM's template inspection
# finds the loop over message content (through the macro) and therefore passes image parts as
# {"type": "image"}, which become <image> here and are expanded by the processor.
# transformers renders with trim_blocks: a newline right after a block tag is dropped, hence the
# explicit {{ '\n' }} where one is needed.
_RENDER_CONTENT = r"""{%- macro render_content(content) -%}
{%- if content is none -%}
{%- elif content is string -%}{{ content }}
{%- else -%}
{%- for part in content -%}
{%- if part is string -%}{{ part }}
{%- elif part['type'] in ['text', 'input_text', 'output_text'] -%}{{ part['text'] }}
{%- elif part['type'] in ['image', 'image_url', 'input_image'] -%}<image>
{%- else -%}
{{- raise_exception('Unsupported content part type "' ~ part['type'] ~ '" for this model; '
    ~ 'supported: text, image, image_url.') -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
"""

_IDEFICS3_TEMPLATE = (
    _RENDER_CONTENT
    + r"""{{- bos_token -}}
{%- if tools -%}
System: {% if messages and messages[0]['role'] == 'system' -%}
{{- render_content(messages[0]['content']) }}

{% endif -%}
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor -%}
</tools>

For each function call, return a json object with function name and arguments
within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><end_of_utterance>
{% endif -%}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{%- if not (loop.first and tools) -%}
System: {{ render_content(message['content']) }}<end_of_utterance>
{% endif -%}
{%- elif message['role'] == 'user' -%}
User: {{ render_content(message['content']) }}<end_of_utterance>
{% elif message['role'] == 'assistant' -%}
Assistant: {{ render_content(message['content']) -}}
{%- if message['tool_calls'] is defined and message['tool_calls'] -%}
{%- for tool_call in message['tool_calls'] -%}
{%- if tool_call['function'] is defined -%}
{%- set tool_call = tool_call['function'] -%}
{%- endif -%}
{%- if not loop.first or message['content'] -%}{{ '\n' }}{%- endif -%}
<tool_call>
{"name": {{ tool_call['name'] | tojson }}, "arguments": {% if tool_call['arguments'] is string -%}
{{- tool_call['arguments'] -}}
{%- else -%}
{{- tool_call['arguments'] | tojson -}}
{%- endif -%}
}
</tool_call>
{%- endfor -%}
{%- endif -%}
<end_of_utterance>
{% elif message['role'] == 'tool' -%}
Tool: <tool_response>
{{ render_content(message['content']) }}
</tool_response><end_of_utterance>
{% else -%}
{{- raise_exception('Unknown message role "' ~ message['role'] ~ '"; this model supports '
    ~ 'system, user, assistant and tool.') -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
Assistant:
{%- if enable_thinking is defined and not enable_thinking -%}
<think>

</think>

{% endif -%}
{%- endif -%}
"""
)


_LICENSE_TITLE = "nimctl tiny Idefics3 test model (generated)"
_LICENSE_TEXT = """\
This directory was generated offline by nimctl (nimctl.modelgen.idefics3). It contains a
randomly initialised vision-language model (Idefics3 architecture, about half a million
parameters) and a byte-level BPE tokenizer trained on a few sentences written for nimctl.
It was not trained on any data set, is not derived from any published checkpoint, and
produces meaningless text. It exists only to exercise serving software in demos and tests.
"""

# Files whose presence (with the marker) makes a directory usable.
_REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "processor_config.json",
    "generation_config.json",
    "LICENSE",
)


def tiny_model_dir(cache_dir: Path) -> Path:
    """Versioned path, so a recipe change never reuses a model built by an older recipe."""
    return versioned_dir(cache_dir, TINY_MODEL_NAME, TINY_MODEL_VERSION)


def ensure_tiny_model(cache_dir: Path) -> Path:
    """Return the model directory, building it first if it is absent or incomplete.

    Seeds are fixed: every build yields byte-identical weights and tokenizer.
    """
    return ensure_built(
        tiny_model_dir(cache_dir),
        _build,
        version=TINY_MODEL_VERSION,
        required=_REQUIRED_FILES,
        # "dialect" stays in the marker so that models cached before the Mistral variant
        # went away are still recognised as complete.
        marker={"name": TINY_MODEL_NAME, "dialect": "idefics3"},
    )


def _build(out: Path) -> None:
    tokenizer = _build_tokenizer()
    _save_processor(tokenizer, out, _IDEFICS3_TEMPLATE)
    _save_model(tokenizer, out)
    write_license(out, _LICENSE_TITLE, _LICENSE_TEXT)


def _build_tokenizer() -> Tokenizer:
    special = [_BOS, _EOS, _PAD, _FAKE_IMAGE, _IMAGE, _GLOBAL_IMAGE, *_GRID, *_MISTRAL_SPECIAL]
    plain = [*_THINK, *_TOOL_CALL, *_MISTRAL_PLAIN]
    return train_bpe(_CORPUS, _VOCAB_SIZE, special, plain)


def _save_processor(tok: Tokenizer, out: Path, template: str) -> None:
    """Save tokenizer, image processor and chat template the way vLLM's AutoProcessor loads them."""
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=_BOS,
        eos_token=_EOS,
        pad_token=_PAD,
        model_max_length=_TEXT_CONFIG["max_position_embeddings"],
        padding_side="left",
        chat_template=template,
    )
    # No splitting: every image becomes one 64 x 64 tile of _IMAGE_SEQ_LEN tokens.
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": _VISION_CONFIG["image_size"]},
        max_image_size={"longest_edge": _VISION_CONFIG["image_size"]},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=_IMAGE_SEQ_LEN,
        chat_template=template,
    )
    processor.save_pretrained(str(out))


def _save_model(tok: Tokenizer, out: Path) -> None:
    import torch
    from transformers import GenerationConfig, Idefics3Config, Idefics3ForConditionalGeneration

    token_id = tok.token_to_id
    vocab_size = -(-tok.get_vocab_size(with_added_tokens=True) // _VOCAB_MULTIPLE) * _VOCAB_MULTIPLE
    ids = {"bos_token_id": token_id(_BOS), "eos_token_id": token_id(_EOS)}
    text_config = {
        **_TEXT_CONFIG,
        **ids,
        "vocab_size": vocab_size,
        "pad_token_id": token_id(_PAD),
    }
    config = Idefics3Config(
        text_config=text_config,
        vision_config=_VISION_CONFIG,
        scale_factor=_SCALE_FACTOR,
        image_token_id=token_id(_IMAGE),
        pad_token_id=token_id(_PAD),
        tie_word_embeddings=False,
        dtype="bfloat16",
        **ids,
    )
    # fork_rng keeps the caller's global torch RNG untouched while fixing ours. Initialise in
    # float32, store bfloat16: vLLM on CPU runs bfloat16 anyway ("auto" downcasts float32 and logs
    # one warning per weight), and the file is half the size.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = Idefics3ForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(pad_token_id=token_id(_PAD), **ids)
    save_pretrained_quietly(model, out)
