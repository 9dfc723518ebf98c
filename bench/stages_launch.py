"""Run nimctl or vLLM's server with timing wrappers on the chat request path (bench only).

`python -m bench.stages_launch nimctl serve --profile tiny ...` or
`python -m bench.stages_launch vllm --model DIR ...` patches the functions that make up one
chat request (in uvicorn, Starlette, FastAPI, vLLM's chat layer, renderer and AsyncLLM, and
nimctl's route, guards and intake) with wrappers that note when each starts and ends, then runs
the normal entry point. The notes of a request live in a dict held by a context variable that
the outermost ASGI wrapper sets, so every task and worker thread the request spawns writes into
its own request's dict; when the response is complete, one JSON line per request goes to
$BENCH_STAGES_FILE (times in microseconds from the ASGI entry).

Why monkeypatching and not a profiler: a profiler says where CPU goes under load; this says
how long each step of ONE request takes in wall time, in the same terms for both servers, so
that a step nimctl adds (or makes slower) shows as a row of its own.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

CURRENT: ContextVar[dict[str, float] | None] = ContextVar("bench_stage_marks", default=None)
PATHS = frozenset({"/v1/chat/completions"})
# When the first bytes of the latest request arrived (uvicorn's data_received): the benchmark
# sends one request at a time, so the next ASGI entry belongs to them.
ARRIVED = [0.0]


def mark(name: str) -> None:
    marks = CURRENT.get()
    if marks is not None and name not in marks:  # the first occurrence in a request counts
        marks[name] = time.perf_counter()


def timed_async(owner: Any, attribute: str, label: str) -> None:
    original = getattr(owner, attribute)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(label + "_start")
        try:
            return await original(*args, **kwargs)
        finally:
            mark(label + "_end")

    setattr(owner, attribute, wrapper)


def timed_sync(owner: Any, attribute: str, label: str) -> None:
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(label + "_start")
        try:
            return original(*args, **kwargs)
        finally:
            mark(label + "_end")

    setattr(owner, attribute, wrapper)


def first_item(owner: Any, attribute: str, label: str) -> None:
    """An async generator method: note when it is first iterated and first yields."""
    original = getattr(owner, attribute)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        mark(label + "_start")
        generator = original(*args, **kwargs)
        try:
            async for item in generator:
                mark(label + "_first")
                yield item
        finally:
            await generator.aclose()

    setattr(owner, attribute, wrapper)


def patch_common() -> None:
    import fastapi.routing
    import starlette.requests
    import uvicorn.config
    import vllm.renderers.hf
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.renderers.base import BaseRenderer
    from vllm.renderers.hf import HfRenderer
    from vllm.v1.engine.async_llm import AsyncLLM

    timed_async(starlette.requests.Request, "body", "body")
    timed_async(fastapi.routing, "run_endpoint_function", "endpoint")
    timed_async(OpenAIServingChat, "create_chat_completion", "chat")
    timed_async(OpenAIServingChat, "render_chat_request", "render")
    timed_async(HfRenderer, "render_messages_async", "messages")
    timed_async(vllm.renderers.hf, "parse_chat_messages_async", "mmparse")
    timed_async(BaseRenderer, "tokenize_prompts_async", "tokenize")
    timed_async(BaseRenderer, "process_for_engine_async", "process")
    timed_async(AsyncLLM, "add_request", "submit")
    first_item(AsyncLLM, "generate", "generate")

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    original_received = HttpToolsProtocol.data_received

    @functools.wraps(original_received)
    def data_received(self: HttpToolsProtocol, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            ARRIVED[0] = time.perf_counter()
        original_received(self, data)

    HttpToolsProtocol.data_received = data_received  # type: ignore[method-assign]

    original_load = uvicorn.config.Config.load
    out = open(os.environ["BENCH_STAGES_FILE"], "a", buffering=1)  # noqa: SIM115 (process-long)

    @functools.wraps(original_load)
    def load(self: uvicorn.config.Config) -> None:
        original_load(self)
        self.loaded_app = _outermost(self.loaded_app, out)

    uvicorn.config.Config.load = load  # type: ignore[method-assign]


def _outermost(app: Callable[..., Awaitable[None]], out: Any) -> Callable[..., Awaitable[None]]:
    """Wrap uvicorn's loaded app: the request's dict, response times, one line at the end."""

    async def timed_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await app(scope, receive, send)
            return
        marks = {"asgi": time.perf_counter(), "arrived": ARRIVED[0]}
        token = CURRENT.set(marks)

        async def timed_send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                marks.setdefault("head", time.perf_counter())
            elif kind == "http.response.body" and message.get("body"):
                marks.setdefault("first_body", time.perf_counter())
            await send(message)
            if kind == "http.response.body" and not message.get("more_body", False):
                marks.setdefault("end", time.perf_counter())

        try:
            await app(scope, receive, timed_send)
        finally:
            CURRENT.reset(token)
            origin = marks["asgi"]
            line = {k: round((v - origin) * 1e6, 1) for k, v in marks.items()}
            # perf_counter is CLOCK_MONOTONIC, one clock for every process on the machine: the
            # client's own time stamps can be set against these.
            line["asgi_abs"] = origin
            out.write(json.dumps(line) + "\n")

    return timed_app


def patch_nimctl() -> None:
    import nimctl.api.chat
    from nimctl.engine.vllm import VllmEngine
    from nimctl.media.intake import MediaIntake

    timed_sync(nimctl.api.chat, "parse_json_object", "json")
    timed_sync(nimctl.api.chat, "check_request", "guards")
    timed_async(MediaIntake, "resolve", "intake")
    timed_sync(VllmEngine, "parse_chat_request", "validate")


def patch_vllm() -> None:
    import fastapi.routing
    import starlette.requests

    timed_async(starlette.requests.Request, "json", "json")
    # FastAPI's dependency solving is where the body becomes a ChatCompletionRequest.
    timed_async(fastapi.routing, "solve_dependencies", "validate")


def main(argv: list[str]) -> int:
    which, rest = argv[0], argv[1:]
    patch_common()
    if which == "nimctl":
        patch_nimctl()
        from nimctl.cli import main as nimctl_main

        return nimctl_main(rest)
    if which == "vllm":
        patch_vllm()
        from vllm.entrypoints.launchers.api_server.entry import main as vllm_main

        sys.argv = ["vllm.entrypoints.launchers.api_server.entry", *rest]
        vllm_main()
        return 0
    raise SystemExit(f"unknown server {which!r}: nimctl or vllm")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
