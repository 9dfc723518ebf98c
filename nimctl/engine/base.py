"""The seam between nimctl's HTTP layer and an inference engine.

The API depends on this protocol only, never on vLLM: the real adapter (`engine.vllm`) and the
deterministic test engine of `tests/api` both implement it, so routes, health and error handling
are tested in-process without loading a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request


class EngineDeadError(Exception):
    """The engine can no longer serve; the process should stop so that it is restarted."""


@dataclass(frozen=True)
class ChatResult:
    """A chat answer: a ready JSON body, or an SSE stream of `data: ...` events ending in
    `data: [DONE]`. Errors are raised as `NimError`, never returned."""

    body: bytes | None = None
    stream: AsyncIterator[str] | None = None


class Engine(Protocol):
    @property
    def served_model_name(self) -> str: ...

    @property
    def max_model_len(self) -> int:
        """Valid once `start` has returned."""
        ...

    @property
    def model_path(self) -> Path | None:
        """The local directory of the weights once started (None for a remote-only source)."""
        ...

    async def start(self) -> None:
        """Load the model and build the chat layer; may take minutes, must not block the loop."""
        ...

    async def check_health(self) -> None:
        """Raise EngineDeadError if the engine cannot serve."""
        ...

    def parse_chat_request(self, payload: dict[str, Any]) -> Any:
        """Validate a chat request body; raise BadRequestError naming the bad field.

        Every scalar, at any depth, must have its JSON type (nothing is coerced), and a
        structured-output constraint the engine could not follow is refused here.
        """
        ...

    async def chat(self, request: Any, raw_request: Request) -> ChatResult: ...

    async def shutdown(self) -> None: ...
