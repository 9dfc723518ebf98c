"""A deterministic engine implementing nimctl's Engine protocol, for in-process API tests.

Its start waits on an event the test controls, so that the live-before-ready window can be
observed; its answers are `test_0 test_1 ...` so that shapes can be asserted exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from nimctl.engine.base import AdapterRefusedError, ChatResult, EngineDeadError
from nimctl.errors import NotFoundError
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


class FakeEngine:
    def __init__(self, served_model_name: str = "test/model", max_model_len: int = 4096) -> None:
        self._name = served_model_name
        self._max_model_len = max_model_len
        self.release = asyncio.Event()
        self.fail_start: Exception | None = None
        self.dead = False
        self.shut_down = False
        self.requests: list[dict[str, Any]] = []
        self.model_path: Path | None = None
        self._validator = StrictRequestModel(FakeChatRequest)
        self._adapters: dict[str, Path] = {}
        self.max_lora_rank = 8

    @property
    def served_model_name(self) -> str:
        return self._name

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    async def start(self) -> None:
        await self.release.wait()
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
        n = int(request.get("max_tokens") or 3)
        words = [f"test_{i}" for i in range(n)]
        if request.get("stream"):
            return ChatResult(stream=self._stream(words))
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
        return ChatResult(body=json.dumps(body).encode())

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
