"""A deterministic engine implementing nimctl's Engine protocol, for in-process API tests.

Its start waits on an event the test controls, so that the live-before-ready window can be
observed, and meanwhile reports the start-up phases a test hands it (`report`); its answers
are `test_0 test_1 ...` so that shapes can be asserted exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from nimctl.engine.base import AdapterRefusedError, ChatResult, EngineDeadError
from nimctl.errors import BadRequestError, NotFoundError
from nimctl.startup import Phase, StartupProgress
from nimctl.validation import StrictRequestModel


class FakeStreamOptions(BaseModel):
    include_usage: bool | None = None


class FakeChatRequest(BaseModel):
    """The part of vLLM's ChatCompletionRequest the API tests use, validated the same way."""

    model: str | None = None
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    stream_options: FakeStreamOptions | None = None


class FakeTokenizePrompt(BaseModel):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class FakeTokenizeChat(BaseModel):
    model: str | None = None
    messages: list[dict[str, Any]]
    add_generation_prompt: bool = True
    add_special_tokens: bool = False
    return_token_strs: bool | None = False


class FakeDetokenize(BaseModel):
    """vLLM's DetokenizeRequest bounds ids the same way."""

    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, le=2**63 - 1)]]


# The fake tokenizer: one token per UTF-8 byte, and a BOS token.
FAKE_VOCAB = 256
FAKE_BOS = 1
FAKE_IMAGE = "<image>"
# The prompt tokens the fake engine reports each media item became (`ChatResult.media_tokens`):
# an image is FAKE_IMAGE in its template, one token per byte.
FAKE_MEDIA_TOKENS = {"image": len(FAKE_IMAGE), "video": 64}


class FakeEngine:
    def __init__(self, served_model_name: str = "test/model", max_model_len: int = 4096) -> None:
        self._name = served_model_name
        self._max_model_len = max_model_len
        self.release = asyncio.Event()
        # Phases for start() to report while it waits for `release`, with an event it sets once
        # it has.
        self._reports: asyncio.Queue[tuple[Phase, float | None, str, asyncio.Event]] = (
            asyncio.Queue()
        )
        self.fail_start: Exception | None = None
        self.dead = False
        self.shut_down = False
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # as each chat request handed them over
        self.model_path: Path | None = None
        self._validator = StrictRequestModel(FakeChatRequest)
        self.media_tokens: dict[str, int] = {"image": 100, "video": 1000}
        self.media_hash = "blake3"
        # Requests being answered now, and the most at once: admission tests read them.
        self.running = 0
        self.most_running = 0
        # While set, answers wait for it to be set (an admission test holds requests running).
        self.hold: asyncio.Event | None = None
        self._tokenize_prompt = StrictRequestModel(FakeTokenizePrompt)
        self._tokenize_chat = StrictRequestModel(FakeTokenizeChat)
        self._detokenize = StrictRequestModel(FakeDetokenize)
        self._adapters: dict[str, Path] = {}
        self.max_lora_rank = 8

    @property
    def served_model_name(self) -> str:
        return self._name

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    async def report(self, phase: Phase, fraction: float | None = None, detail: str = "") -> None:
        """Have start() report this (a new phase, or progress in the current one); returns once
        it has."""
        done = asyncio.Event()
        await self._reports.put((phase, fraction, detail, done))
        async with asyncio.timeout(5):
            await done.wait()

    async def start(self, progress: StartupProgress) -> None:
        released = asyncio.ensure_future(self.release.wait())
        try:
            while not released.done():
                report = asyncio.ensure_future(self._reports.get())
                await asyncio.wait({released, report}, return_when=asyncio.FIRST_COMPLETED)
                if not report.done():
                    report.cancel()
                    continue
                phase, fraction, detail, done = report.result()
                if phase is progress.status.phase:
                    progress.update(fraction, detail)
                else:
                    progress.enter(phase, detail, fraction)
                done.set()
        finally:
            released.cancel()
        if self.fail_start is not None:
            raise self.fail_start

    async def check_health(self) -> None:
        if self.dead:
            raise EngineDeadError("engine core process exited")

    def parse_chat_request(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._validator.validate(payload)
        return payload

    async def chat(self, request: dict[str, Any], headers: Mapping[str, str]) -> ChatResult:
        if request.get("model", self._name) not in (self._name, *self._adapters):
            raise NotFoundError(f"The model `{request['model']}` does not exist.", param="model")
        self.requests.append(request)
        self.headers.append(dict(headers))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.hold is not None:
                await self.hold.wait()
        finally:
            self.running -= 1
        n = int(request.get("max_tokens") or 3)
        words = [f"test_{i}" for i in range(n)]
        media = _fake_media_tokens(request["messages"])
        if request.get("stream"):
            return ChatResult(stream=self._stream(words), media_tokens=media)
        body = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": self._name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(words)},
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1},
        }
        return ChatResult(body=json.dumps(body).encode(), media_tokens=media)

    async def _stream(self, words: list[str]) -> AsyncIterator[str]:
        for word in words:
            chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": word}}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    async def shutdown(self) -> None:
        self.shut_down = True

    # LoRA adapters: refused as vLLM refuses them at load, for a broken config or a rank above
    # max_lora_rank.

    @property
    def adapters(self) -> Mapping[str, Path]:
        return dict(self._adapters)

    async def load_adapter(self, name: str, path: Path) -> None:
        try:
            rank = json.loads((path / "adapter_config.json").read_text())["r"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AdapterRefusedError(f"unreadable adapter_config.json: {exc}") from None
        if rank > self.max_lora_rank:
            raise AdapterRefusedError(
                f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}."
            )
        self._adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        self._adapters.pop(name, None)

    # --- token routes ---------------------------------------------------------------------------

    async def tokenize(self, payload: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        self.requests.append(payload)
        if "messages" in payload:
            chat = self._tokenize_chat.validate(payload)
            tokens = _fake_tokens(_fake_template(chat.messages), chat.add_special_tokens)
            strs = chat.return_token_strs
        else:
            text = self._tokenize_prompt.validate(payload)
            tokens = _fake_tokens(text.prompt, text.add_special_tokens)
            strs = text.return_token_strs
        body = {
            "count": len(tokens),
            "max_model_len": self._max_model_len,
            "tokens": tokens,
            "token_strs": [chr(t) for t in tokens] if strs else None,
        }
        return json.dumps(body).encode()

    async def detokenize(self, payload: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        request = self._detokenize.validate(payload)
        if any(t >= FAKE_VOCAB for t in request.tokens):
            raise BadRequestError(
                f"Token id {max(request.tokens)} is out of vocabulary", param="tokens"
            )
        text = bytes(request.tokens).decode("utf-8", errors="replace")
        return json.dumps({"prompt": text}).encode()

    async def render_chat(self, payload: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        request = self._validator.validate(payload)
        self.requests.append(payload)
        prompt = _fake_template(request.messages)
        body = {
            "request_id": "chatcmpl-test",
            "token_ids": _fake_tokens(prompt, False),
            "features": None,
            "sampling_params": {"max_tokens": request.max_tokens},
            "model": request.model,
            "prompt": prompt,
        }
        return json.dumps(body).encode()


def _fake_template(messages: list[dict[str, Any]]) -> str:
    """`role: text` lines, an image as FAKE_IMAGE; then the generation prompt."""
    lines = []
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        text = "".join(
            FAKE_IMAGE if str(part.get("type")).startswith("image") else str(part.get("text") or "")
            for part in parts
        )
        lines.append(f"{message.get('role')}: {text}")
    return "\n".join([*lines, "assistant:"])


def _fake_media_tokens(messages: list[dict[str, Any]]) -> dict[str, int]:
    """kind -> FAKE_MEDIA_TOKENS per item, for the parts as the media intake hands them on
    (`image_pil`, `image_url`, `video_url`)."""
    counts: dict[str, int] = {}
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            kind = str(part.get("type")).partition("_")[0]
            if kind in FAKE_MEDIA_TOKENS:
                counts[kind] = counts.get(kind, 0) + FAKE_MEDIA_TOKENS[kind]
    return counts


def _fake_tokens(text: str, add_special_tokens: bool) -> list[int]:
    return [FAKE_BOS] * add_special_tokens + list(text.encode())
