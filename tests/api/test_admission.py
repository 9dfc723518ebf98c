"""Admission control in-process: a burst against small limits, with the fake engine holding its
requests running, so that what reaches the engine is counted exactly."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import ClientDisconnect

from nimctl.admission import Admission, Limits
from nimctl.api.chat import AdmittedStream
from tests.support.errors import assert_error_shape

MODEL = "nimctl/tiny-vlm"


def _chat(text: str = "hi", **extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def _with_image(url: str) -> dict[str, object]:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2}


async def _until(condition, what: str, deadline_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


async def _rejected(h, reason: str) -> float:
    text = (await h.client.get("/v1/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "nimctl_requests_rejected":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels == {"reason": reason}:
                    return sample.value
    return 0.0


async def test_a_burst_over_the_request_limit_gets_429_and_never_reaches_the_engine(
    make_harness,
):
    async with make_harness(max_queued_requests=2) as h:
        await h.make_ready()
        h.engine.hold = asyncio.Event()
        burst = [
            asyncio.ensure_future(h.client.post("/v1/chat/completions", json=_chat(max_tokens=2)))
            for _ in range(5)
        ]
        await _until(lambda: sum(t.done() for t in burst) == 3, "three answers")
        await _until(lambda: h.engine.running == 2, "two requests running")
        for task in (t for t in burst if t.done()):
            response = task.result()
            assert response.status_code == 429
            error = assert_error_shape(response.json(), 429)
            assert error["type"] == "TooManyRequestsError"
            assert "NIM_MAX_QUEUED_REQUESTS" in error["message"]
            assert response.headers["retry-after"] == "1"
        h.engine.hold.set()
        answers = await asyncio.gather(*burst)
        assert sorted(r.status_code for r in answers) == [200, 200, 429, 429, 429]
        assert h.engine.most_running == 2 and len(h.engine.requests) == 2
        assert await _rejected(h, "max_queued_requests") == 3
        # Everything admitted was given back: the next one runs.
        assert h.app.state.nimctl.admission.admitted == 0
        ok = await h.client.post("/v1/chat/completions", json=_chat(max_tokens=2))
        assert ok.status_code == 200


async def test_a_refused_request_fetches_none_of_its_media(make_harness):
    async with make_harness(max_queued_requests=1) as h:
        await h.make_ready()
        h.engine.hold = asyncio.Event()
        held = asyncio.ensure_future(h.client.post("/v1/chat/completions", json=_chat()))
        await _until(lambda: h.engine.running == 1, "one request running")
        # Fetched, this URL would be refused as a media problem (400), not a full queue.
        response = await h.client.post(
            "/v1/chat/completions", json=_with_image("http://media.example.invalid/cat.png")
        )
        assert response.status_code == 429, response.text
        h.engine.hold.set()
        assert (await held).status_code == 200
        refused = await h.client.post(
            "/v1/chat/completions", json=_with_image("http://media.example.invalid/cat.png")
        )
        assert refused.status_code == 400  # with room, the same request reaches the intake


async def test_the_token_limit_counts_images_by_the_model_bound(make_harness):
    async with make_harness(max_queued_tokens=150) as h:
        await h.make_ready()
        h.engine.media_tokens = {"image": 100, "video": 1000}
        h.engine.hold = asyncio.Event()
        admission = h.app.state.nimctl.admission
        png = _tiny_png_url()
        first = asyncio.ensure_future(h.client.post("/v1/chat/completions", json=_with_image(png)))
        await _until(lambda: h.engine.running == 1, "the first request running")
        assert 100 < admission.queued_tokens < 150  # the image's 100 and a little text
        # Under the limit, as in vLLM, the next is admitted even though it goes past it.
        second = asyncio.ensure_future(h.client.post("/v1/chat/completions", json=_with_image(png)))
        await _until(lambda: h.engine.running == 2, "the second request running")
        third = await h.client.post("/v1/chat/completions", json=_chat())
        assert third.status_code == 429
        assert "NIM_MAX_QUEUED_TOKENS" in assert_error_shape(third.json(), 429)["message"]
        assert await _rejected(h, "max_queued_tokens") == 1
        h.engine.hold.set()
        assert [r.status_code for r in await asyncio.gather(first, second)] == [200, 200]
        assert admission.queued_tokens == 0 and admission.admitted == 0


async def test_a_stream_gives_its_tokens_back_at_its_first_event_and_the_rest_at_its_end():
    admission = Admission(Limits(requests=4, tokens=1000))
    ticket = admission.admit(1, 50)
    closed = []

    async def events():
        try:
            for word in ("a", "b"):
                yield f"data: {word}\n\n"
        finally:
            closed.append(True)

    response = AdmittedStream(events(), ticket)
    sent = []
    first_seen = asyncio.Event()

    async def send(message):
        sent.append(message)
        if message.get("body") and not first_seen.is_set():
            first_seen.set()
            # The first event is out: the prompt is no longer queued; the request still runs.
            assert (admission.queued_tokens, admission.admitted) == (0, 1)

    async def receive():
        await asyncio.Event().wait()  # no disconnect

    await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    assert first_seen.is_set() and closed == [True]
    assert (admission.queued_tokens, admission.admitted) == (0, 0)


async def test_a_stream_that_fails_still_gives_everything_back():
    admission = Admission(Limits(requests=1))
    ticket = admission.admit(1, 10)

    async def events():
        raise OSError("client gone")
        yield ""  # pragma: no cover

    async def send(message):
        pass

    async def receive():
        return {"type": "http.disconnect"}

    response = AdmittedStream(events(), ticket)
    with pytest.raises(ClientDisconnect):
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    assert (admission.queued_tokens, admission.admitted) == (0, 0)


async def test_more_choices_than_the_limit_is_a_400_not_a_retry(make_harness):
    async with make_harness(max_queued_requests=2) as h:
        await h.make_ready()
        response = await h.client.post("/v1/chat/completions", json=_chat(n=3))
        assert response.status_code == 400
        assert assert_error_shape(response.json(), 400)["param"] == "n"
        assert "retry-after" not in response.headers


async def test_without_limits_nothing_is_counted(harness):
    await harness.make_ready()
    assert harness.app.state.nimctl.admission is None
    response = await harness.client.post("/v1/chat/completions", json=_chat(stream=True))
    assert response.status_code == 200


def _tiny_png_url() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
