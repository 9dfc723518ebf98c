"""What a request's media became in prompt tokens: read from vLLM's rendered engine input by the
chat layer nimctl builds (engine/vllm.py), handed back on ChatResult, and left behind nowhere,
however the call ends. vLLM's render itself stands in: its engine inputs are built with vLLM's
own constructors, and no engine is started."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from nimctl.errors import NimError
from nimctl.metrics import MediaMetrics


@pytest.fixture(scope="module")
def vllm() -> Any:
    return pytest.importorskip("vllm")


def _image_input(*lengths: int) -> Any:
    from vllm.inputs.engine import mm_input
    from vllm.multimodal.inputs import PlaceholderRange

    ranges, offset = [], 3
    for length in lengths:
        ranges.append(PlaceholderRange(offset=offset, length=length))
        offset += length + 2
    return mm_input(
        prompt_token_ids=list(range(offset)),
        mm_kwargs={},
        mm_hashes={"image": [f"h{i}" for i in range(len(lengths))]},
        mm_placeholders={"image": ranges},
    )


def _text_input() -> Any:
    from vllm.inputs.engine import tokens_input

    return tokens_input([1, 2, 3])


class Rendered:
    """What the stand-in for vLLM's render answers, and what its generation then does."""

    def __init__(self, render: Any, then: str = "stream") -> None:
        self.render = render
        self.then = then
        self.started = asyncio.Event()


@pytest.fixture
def engine(vllm: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A VllmEngine whose chat layer is nimctl's subclass of vLLM's, over a stand-in render."""
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
    from vllm.exceptions import GenerationError, RetryableRequestError

    from nimctl.engine.vllm import VllmEngine, media_counting_chat
    from nimctl.profiles import ProfileStore, builtin_profiles_dir
    from nimctl.settings import NimSettings

    script: dict[int, Rendered] = {}

    async def render(self: Any, request: Any) -> Any:
        return script[id(request)].render

    monkeypatch.setattr(OpenAIServingChat, "render_chat_request", render)
    engine = VllmEngine(NimSettings(), ProfileStore.load([builtin_profiles_dir()]).get("tiny"))
    chat = object.__new__(media_counting_chat(engine._rendered_media))

    async def create_chat_completion(request: Any, raw: Any) -> Any:
        step = script[id(request)]
        rendered = await chat.render_chat_request(request)
        if isinstance(rendered, ErrorResponse):
            return rendered
        if step.then == "fail":
            raise RuntimeError("the engine core died")
        if step.then == "hang":
            step.started.set()
            await asyncio.Event().wait()
        return _stream()

    chat.create_chat_completion = create_chat_completion
    engine._chat = chat
    engine._error_response = create_error_response
    engine._error_response_type = ErrorResponse
    engine._generation_failed = (GenerationError, RetryableRequestError)
    engine.script = script
    return engine


async def _stream() -> AsyncIterator[str]:
    yield "data: [DONE]\n\n"


def _request(engine: Any, rendered: Rendered, **fields: Any) -> Any:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    request = ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True, **fields
    )
    engine.script[id(request)] = rendered
    return request


async def test_the_placeholder_tokens_of_each_kind_come_back_with_the_answer(engine):
    request = _request(engine, Rendered(([], [_image_input(7, 5)])), n=2)
    result = await engine.chat(request, {})
    assert dict(result.media_tokens) == {"image": 12}
    assert engine._rendered_media == {}


async def test_a_text_only_prompt_has_none(engine):
    result = await engine.chat(_request(engine, Rendered(([], [_text_input()]))), {})
    assert dict(result.media_tokens) == {}
    assert engine._rendered_media == {}


async def test_a_refused_render_a_failed_generation_and_a_cancel_leave_nothing_behind(engine):
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    refused = Rendered(create_error_response("bad image", param="messages"))
    with pytest.raises(NimError) as error:
        await engine.chat(_request(engine, refused), {})
    assert error.value.status == 400
    failed = Rendered(([], [_image_input(7)]), then="fail")
    with pytest.raises(NimError):
        await engine.chat(_request(engine, failed), {})
    assert engine._rendered_media == {}
    hanging = Rendered(([], [_image_input(7)]), then="hang")
    task = asyncio.ensure_future(engine.chat(_request(engine, hanging), {}))
    async with asyncio.timeout(30):
        await hanging.started.wait()
    assert len(engine._rendered_media) == 1  # held while the request is in the engine
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert engine._rendered_media == {}


def test_media_metrics_observe_tokens_by_kind_and_label_an_unknown_kind():
    registry = CollectorRegistry()
    metrics = MediaMetrics(registry)
    metrics.observe_tokens({"image": 300, "video": 5000})
    metrics.observe_tokens({"image": 20, "audio": 90})
    value = registry.get_sample_value
    assert value("nimctl_media_request_tokens_count", {"kind": "image"}) == 2
    assert value("nimctl_media_request_tokens_sum", {"kind": "image"}) == 320
    assert value("nimctl_media_request_tokens_sum", {"kind": "video"}) == 5000
    assert value("nimctl_media_request_tokens_count", {"kind": "audio"}) == 1
