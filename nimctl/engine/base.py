"""The seam between nimctl's HTTP layer and an inference engine.

The API depends on this protocol only, never on vLLM: the real adapter (`engine.vllm`) and the
deterministic test engine of `tests/api` both implement it, so routes, health and error handling
are tested in-process without loading a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from nimctl.startup import StartupProgress

# What an engine's `parse_chat_request` makes of a body, handed back to its `chat` unread by the
# API (vLLM's `ChatCompletionRequest` for the real engine, a dict for the test engine).
ChatRequestT = TypeVar("ChatRequestT")


class EngineDeadError(Exception):
    """The engine can no longer serve; the process should stop so that it is restarted."""


class AdapterRefusedError(Exception):
    """A LoRA adapter that cannot be served with this model; the message says why."""


@dataclass(frozen=True)
class ChatResult:
    """A chat answer: a ready JSON body, or an SSE stream of `data: ...` events ending in
    `data: [DONE]`. Errors are raised as `NimError`, never returned.

    `media_tokens` is what the request's media became in its prompt: kind ("image",
    "video") -> placeholder tokens, summed over that kind's items; empty without media. It is
    what KV cache and batches are sized by, known only once the engine has rendered the prompt.
    """

    body: bytes | None = None
    stream: AsyncIterator[str] | None = None
    media_tokens: Mapping[str, int] = field(default_factory=dict)


class Engine(Protocol[ChatRequestT]):
    """An engine, by the type of its parsed chat request; the API holds an `Engine[Any]`, as it
    only hands that request back to the engine that parsed it."""

    @property
    def served_model_name(self) -> str: ...

    @property
    def max_model_len(self) -> int:
        """Valid once `start` has returned."""
        ...

    @property
    def media_tokens(self) -> Mapping[str, int]:
        """The most prompt tokens one item of each modality ("image", "video") can take in
        this model, as vLLM computes them; valid once `start` has returned. Admission control
        counts media by these before fetching anything."""
        ...

    @property
    def media_hash(self) -> str:
        """The hash the engine keys its multimodal caches with ("blake3", or "sha256" /
        "sha512" where FIPS rules); the media intake makes each image's cache uuid with it, as
        vLLM would itself. Valid once `start` has returned."""
        ...

    @property
    def model_path(self) -> Path | None:
        """The local directory of the weights once started (None for a remote-only source)."""
        ...

    async def start(self, progress: StartupProgress) -> None:
        """Load the model and build the chat layer; may take minutes, must not block the loop.

        `progress` is moved through the phases as they begin (downloading, loading, warming
        up); it is what readiness, the start-up gauges and the log report meanwhile."""
        ...

    async def check_health(self) -> None:
        """Raise EngineDeadError if the engine cannot serve."""
        ...

    def parse_chat_request(self, payload: dict[str, Any]) -> ChatRequestT:
        """Validate a chat request body; raise BadRequestError naming the bad field.

        Every scalar, at any depth, must have its JSON type (nothing is coerced), and a
        structured-output constraint the engine could not follow is refused here.
        """
        ...

    async def chat(self, request: ChatRequestT, headers: Mapping[str, str]) -> ChatResult:
        """Answer a parsed request. `headers` are the HTTP request's, looked up without regard
        to case (Starlette's `Headers`): vLLM takes its request id, priority, trace context and
        the like from them. A client's disconnect is the caller's to watch: it cancels this."""
        ...

    async def shutdown(self) -> None: ...

    # --- token routes: /tokenize, /detokenize, /v1/chat/completions/render ---------------------
    # Each takes a body the API has parsed, and checked with the guards and media intake where it
    # has messages; each validates it strictly (as `parse_chat_request` does) and answers a JSON
    # body, or raises NimError. No inference runs.

    async def tokenize(self, payload: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        """`{count, max_model_len, tokens, token_strs}` for a body with either `prompt` (text)
        or `messages` (the chat form, templated and with media placeholders expanded, so that
        `count` is the `usage.prompt_tokens` a chat completion of those messages reports)."""
        ...

    async def detokenize(self, payload: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        """`{prompt}` for `{tokens}`; an id outside the vocabulary is a BadRequestError."""
        ...

    async def render_chat(self, payload: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        """What the engine would be given for a chat request (the token ids, multimodal
        features, sampling parameters) and the prompt those ids spell, without inference."""
        ...

    # LoRA adapters (NIM_PEFT_SOURCE); requests name them as their `model`.

    @property
    def adapters(self) -> Mapping[str, Path]:
        """The adapters loaded: name -> directory (empty with LoRA off)."""
        ...

    async def load_adapter(self, name: str, path: Path) -> None:
        """Load an adapter; AdapterRefusedError if it cannot be served with this model."""
        ...

    async def unload_adapter(self, name: str) -> None:
        """New requests can no longer name it; requests in flight finish with it."""
        ...
