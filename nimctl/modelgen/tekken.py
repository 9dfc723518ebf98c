"""The Tekken tokenizer of nimctl's models in Mistral's native format (`tekken.json`).

Mistral's checkpoints are served with `tokenizer_mode=mistral`: mistral_common, not a Jinja
template, renders each prompt from `tekken.json` (its own validation errors, `reasoning_effort` as
model settings, images as [IMG] grids, [THINK] and [TOOL_CALLS] as control tokens, the grammar
that constrains tool choice). This writes such a file offline at the version the real model's
file has (v15 for Mistral Small 4, whose model settings take a reasoning effort of "none" or
"high"; v13, with no model settings, for the instruct Mistral Large 3), Mistral's control tokens
at their usual ranks, and a byte-level BPE learned from a few sentences written for
nimctl, since the real 131k-id vocabulary is not available offline. Everything is deterministic.
"""

from __future__ import annotations

import base64
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

# The versions nimctl writes. Model settings (reasoning_effort) exist from v15 on, and vLLM
# forwards `reasoning_effort` to the tokenizer only from version 15.
VERSIONS = ("v13", "v15")
_WITH_SETTINGS = frozenset({"v15"})
# Real Tekken files reserve 1000 special ranks; 64 keeps the vocabulary (and the embedding)
# small. 64 + 256 bytes + 704 merges = 1024 ids, a multiple of 64, so every id the random
# model may sample decodes to a real token and no embedding row is padding.
_NUM_SPECIAL = 64
VOCAB_SIZE = 1024
_NUM_MERGES = VOCAB_SIZE - _NUM_SPECIAL - 256
# Tekken's pre-tokenizer (tiktoken pat_str), as in Mistral's published tekken.json files.
_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Ranks 0-19 follow every Tekken file (mistral_common's historical defaults); the newer control
# tokens sit after a gap of <SPECIAL_n> fillers, as in Mistral's files, but nothing depends on
# their exact ids. All are control tokens, as in Mistral's files: vLLM's MistralTokenizer keeps
# [THINK], [/THINK], [TOOL_CALLS] and [ARGS] when detokenizing, and its mistral parsers match
# them by token id.
_SPECIAL_BY_RANK = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    3: "[INST]",
    4: "[/INST]",
    5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]",
    8: "[/TOOL_RESULTS]",
    9: "[TOOL_CALLS]",
    10: "[IMG]",
    11: "<pad>",
    12: "[IMG_BREAK]",
    13: "[IMG_END]",
    14: "[PREFIX]",
    15: "[MIDDLE]",
    16: "[SUFFIX]",
    17: "[SYSTEM_PROMPT]",
    18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]",
    32: "[ARGS]",
    33: "[CALL_ID]",
    34: "[THINK]",
    35: "[/THINK]",
    36: "[MODEL_SETTINGS]",
    37: "[/MODEL_SETTINGS]",
}
# Mistral Small 4's setting: reasoning off by default, "high" turns it on; other efforts are
# refused by mistral_common.
_MODEL_SETTINGS_BUILDER: dict[str, Any] = {
    "reasoning_effort": {
        "type": "enum",
        "accepts_none": True,
        "default": "none",
        "values": ["none", "high"],
    }
}

# Text the merges are learned from: prose, reasoning, and the JSON that mistral_common writes
# for tools, tool calls and model settings, so prompts and tool calls tokenize compactly.
_CORPUS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small model can still answer questions, follow instructions and call tools.",
    "What is the weather like in Paris today? It is sunny and warm in the afternoon.",
    "The user asked the assistant to summarize the document and list the key points.",
    "Let me think step by step before I give the final answer to the question.",
    "First, I need to understand what the user wants. Then I will check the facts.",
    "Wait, that does not look right. Let me reconsider the problem from the beginning.",
    "So the answer should be correct, short and easy to read for the person who asked.",
    "The cat is sitting on the mat, and the dog is sleeping in the garden.",
    "Large language models generate text one token at a time, from left to right.",
    "The function returns a list of results sorted by their score and their date.",
    "Call the tool with the name of the city and the unit of temperature.",
    "The answer is forty two, according to the book that the student read last year.",
    "Here is the data you requested: the total is one hundred and twenty three.",
    "Good morning! How can I help you today? I would like a cup of tea, please.",
    "The server is healthy, the model is ready and the queue of requests is empty.",
    "We measured the latency of each request and the number of tokens per second.",
    "In the morning the sun rises in the east and it sets in the west in the evening.",
    "She opened the window, looked at the mountains and smiled at the blue sky.",
    "The engineer wrote a test that checks the status code and the response fields.",
    "You are a helpful assistant. Answer briefly, honestly and in the user's language.",
    "Always use the tools when they are useful, and never invent their results.",
    "Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10 appear in many documents.",
    "The river flows through the old town, past the market and under the stone bridge.",
    "The library opens at nine and closes at five, except on Sunday when it is closed.",
    "Please write a short poem about the sea, the wind and the light of the moon.",
    "Translate the following sentence into French, German, Spanish and Italian.",
    "The meeting is scheduled for Monday at ten o'clock in the main conference room.",
    "Our team shipped a new version of the service with better error messages.",
    "If the input is invalid, the system returns an error and explains why.",
    "The temperature in Berlin is twelve degrees and it might rain tonight.",
    "Search the web for recent news about open source models and summarize them.",
    "The price of the ticket is forty euros, and children travel for free.",
    "This function computes the sum of two numbers and returns the result.",
    "Mistral models use special control tokens for instructions, tools and reasoning.",
    '{"reasoning_effort": "none"}',
    '{"reasoning_effort": "high"}',
    '[{"type": "function", "function": {"name": "get_weather", "description": "Get the '
    'current weather in a city", "parameters": {"type": "object", "properties": {"city": '
    '{"type": "string", "description": "The city name"}, "unit": {"type": "string", '
    '"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}]',
    '[{"type": "function", "function": {"name": "search", "description": "Search the '
    'web", "parameters": {"type": "object", "properties": {"query": {"type": "string"}, '
    '"limit": {"type": "integer", "minimum": 1}}, "required": ["query"]}}}]',
    '{"city": "Paris", "unit": "celsius"}',
    '{"query": "open source models", "limit": 5}',
    '{"temperature": 21, "condition": "sunny", "humidity": 0.4}',
    '{"result": true, "items": [], "count": 0, "error": null}',
    "def add(a: int, b: int) -> int:\n    return a + b\n",
    "for item in items:\n    print(item)\n",
    "Hello, world! This is a test.\nThe end.\n",
)


def control_token_id(token: str) -> int:
    """The id of a control token ("[TOOL_CALLS]", ...): control tokens take the first ranks."""
    for rank, name in _SPECIAL_BY_RANK.items():
        if name == token:
            return rank
    raise KeyError(token)


def write_tekken(out: Path, version: str, image: dict[str, int] | None = None) -> None:
    """Write `out/tekken.json` (with an image section if given) and load it back as vLLM will.

    The one tokenizer of nimctl's Mistral-native models; see `_SPECIAL_BY_RANK` for its ids.
    """
    if version not in VERSIONS:
        raise ValueError(f"Tekken {version!r}: nimctl writes {', '.join(VERSIONS)}")
    tekken = _tekken_json(_learn_merges(_CORPUS, _NUM_MERGES), version, image)
    (out / "tekken.json").write_text(json.dumps(tekken, ensure_ascii=False), encoding="utf-8")
    _check_tokenizer(out / "tekken.json", version, image=image is not None)


def _learn_merges(corpus: tuple[str, ...], count: int) -> list[bytes]:
    """Byte-level BPE over Tekken's pre-tokenization, in merge order (= tiktoken rank order).

    A few dozen lines instead of a trainer library: tiktoken needs ranks where every merged
    token outranks its parts, which a plain greedy BPE gives directly, and ties are broken by
    rank so the result never depends on dict or hash order.
    """
    import regex

    pattern = regex.compile(_PATTERN)
    counts: dict[bytes, int] = {}
    for text in corpus:
        for piece in pattern.findall(text):
            key = piece.encode("utf-8")
            counts[key] = counts.get(key, 0) + 1
    words = [[bytes([b]) for b in word] for word in counts]
    freqs = list(counts.values())
    ranks = {bytes([i]): i for i in range(256)}
    merges: list[bytes] = []
    while len(merges) < count:
        pairs: dict[tuple[bytes, bytes], int] = {}
        for word, freq in zip(words, freqs, strict=True):
            for pair in pairwise(word):
                pairs[pair] = pairs.get(pair, 0) + freq
        if not pairs:
            raise RuntimeError(f"corpus too small: only {len(merges)} of {count} merges")
        left, right = max(pairs, key=lambda p: (pairs[p], -ranks[p[0]], -ranks[p[1]]))
        merged = left + right
        if merged not in ranks:  # the same bytes can arise from two different splits
            ranks[merged] = 256 + len(merges)
            merges.append(merged)
        for word in words:
            i = 0
            while i < len(word) - 1:
                if word[i] == left and word[i + 1] == right:
                    word[i : i + 2] = [merged]
                i += 1
    return merges


def _tekken_json(
    merges: list[bytes], version: str, image: dict[str, int] | None = None
) -> dict[str, Any]:
    """The tekken.json layout that mistral_common's Tekkenizer.from_file reads. `image`: the
    section that gives the tokenizer an image encoder ([IMG] tokens per patch grid)."""
    vocab = []
    for rank, token in enumerate([bytes([i]) for i in range(256)] + merges):
        try:
            text: str | None = token.decode("utf-8")
        except UnicodeDecodeError:
            text = None  # a partial UTF-8 sequence, as in Mistral's files
        vocab.append(
            {
                "rank": rank,
                "token_bytes": base64.b64encode(token).decode("ascii"),
                "token_str": text,
            }
        )
    special = [
        {
            "rank": rank,
            "token_str": _SPECIAL_BY_RANK.get(rank, f"<SPECIAL_{rank}>"),
            "is_control": True,
        }
        for rank in range(_NUM_SPECIAL)
    ]
    tekken: dict[str, Any] = {
        "config": {
            "pattern": _PATTERN,
            "num_vocab_tokens": len(vocab),
            "default_vocab_size": VOCAB_SIZE,
            "default_num_special_tokens": _NUM_SPECIAL,
            "version": version,
        },
        "vocab": vocab,
        "special_tokens": special,
        **(
            {"model_settings_builder": _MODEL_SETTINGS_BUILDER} if version in _WITH_SETTINGS else {}
        ),
        "version": 1,
        "type": "Tekken",
    }
    if image is not None:
        tekken["image"] = image
    return tekken


def _check_tokenizer(path: Path, version: str, image: bool) -> None:
    """Load the file the way vLLM will, so a broken recipe fails the build, not the server."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    tokenizer = MistralTokenizer.from_file(path)
    inner = tokenizer.instruct_tokenizer.tokenizer
    if inner.n_words != VOCAB_SIZE or inner.version.value != version:
        raise RuntimeError(f"unexpected tokenizer {inner.version.value}, {inner.n_words} ids")
    if (inner.model_settings_builder is not None) != (version in _WITH_SETTINGS):
        raise RuntimeError(f"Tekken {version}: model settings were not read as written")
    if image != (tokenizer.instruct_tokenizer.image_encoder is not None):
        raise RuntimeError(f"expected an image encoder: {image}, got the opposite")
