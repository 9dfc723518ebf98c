"""Traces (NIM_ENABLE_OTEL): the span tree nimctl exports for a request, as an OTLP/HTTP
collector receives it, for the in-process app with the fake engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from nimctl.api import create_app
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from nimctl.settings import NimSettings
from nimctl.tracing import OtlpTarget, Tracing
from tests.support.fake_engine import FAKE_MEDIA_TOKENS, FakeEngine
from tests.support.image_server import ImageServer
from tests.support.media import image_bytes, image_data_url
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.route("/cat.jpg", image_bytes("JPEG", (64, 48)), content_type="image/jpeg")
        yield server


class Traced:
    def __init__(self, client: httpx.AsyncClient, engine: FakeEngine, tracing: Tracing) -> None:
        self.client = client
        self.engine = engine
        self.tracing = tracing

    async def flushed(self) -> None:
        await asyncio.to_thread(self.tracing.provider.force_flush)


@pytest.fixture
async def traced(receiver: OtlpReceiver) -> AsyncIterator[Traced]:
    tracing = Tracing.to_otlp(
        OtlpTarget.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}),
        {"OTEL_SERVICE_NAME": "nimctl-test"},
    )
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    engine = FakeEngine(served_model_name=profile.served_model_name)
    settings = NimSettings(media_allowlist="127.0.0.1")
    app = create_app(settings, profile, engine, registry=CollectorRegistry(), tracing=tracing)
    app.state.nimctl.supervisor.health_interval_s = 0.01
    engine.release.set()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        while app.state.nimctl.supervisor.state.value != "ready":
            await asyncio.sleep(0.01)
        yield Traced(client, engine, tracing)
    tracing.shutdown()


def _chat(*parts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, *parts]}],
        **fields,
    }


def _trace(spans: list[ReceivedSpan], trace_id: str) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans if s.trace_id == trace_id}


async def test_a_request_is_one_trace_continuing_the_clients(traced, receiver, images):
    body = _chat(
        {"type": "image_url", "image_url": {"url": images.url("/cat.jpg")}},
        {"type": "image_url", "image_url": {"url": image_data_url("PNG", (20, 10))}},
    )
    headers = {
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01",
        "x-request-id": "trace-me-1",
    }
    response = await traced.client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200
    await traced.flushed()
    spans = receiver.wait_for(
        lambda spans: "POST /v1/chat/completions" in _trace(spans, CLIENT_TRACE), 10
    )
    mine = [s for s in spans if s.trace_id == CLIENT_TRACE]
    by_name = {s.name: s for s in mine}
    server = by_name["POST /v1/chat/completions"]
    assert server.parent_id == CLIENT_PARENT  # the client's span is its parent
    assert server.kind == SERVER_KIND and server.service == "nimctl-test"
    assert server.attributes["nimctl.request_id"] == "trace-me-1"
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    for child in ("guards", "media", "engine"):
        assert by_name[child].parent_id == server.span_id, child
    media = by_name["media"]
    fetches = [s for s in mine if s.name == "media.fetch"]
    decodes = [s for s in mine if s.name == "media.decode"]
    assert len(fetches) == 1 and len(decodes) == 2  # the data: URL is not fetched
    assert {s.parent_id for s in fetches + decodes} == {media.span_id}
    fetch = fetches[0]
    assert fetch.attributes["nimctl.media.part"] == "messages[0].content[1]"
    assert fetch.attributes["nimctl.media.bytes"] == len(image_bytes("JPEG", (64, 48)))
    pixels = sorted(s.attributes["nimctl.media.pixels"] for s in decodes)
    assert pixels == [200, 64 * 48]
    assert media.start_ns <= fetch.start_ns <= fetch.end_ns <= media.end_ns
    # What the two images became in prompt tokens, on the span of the call that rendered them.
    engine = by_name["engine"]
    assert engine.attributes == {"nimctl.media.image_tokens": 2 * FAKE_MEDIA_TOKENS["image"]}
    # The engine got the engine span as the trace parent, not the client's.
    sent = traced.engine.headers[-1]
    assert sent["traceparent"] == f"00-{CLIENT_TRACE}-{by_name['engine'].span_id}-01"
    assert sent["x-request-id"] == "trace-me-1"


async def test_a_stream_has_its_span_and_a_refusal_is_recorded(traced, receiver):
    response = await traced.client.post(
        "/v1/chat/completions", json=_chat(stream=True, max_tokens=4)
    )
    assert response.status_code == 200
    trace_id = traced.engine.headers[-1]["traceparent"].split("-")[1]
    refused = await traced.client.post("/v1/chat/completions", json=_chat(tool_choice="auto"))
    assert refused.status_code == 400
    await traced.flushed()
    spans = receiver.wait_for(lambda spans: "stream" in _trace(spans, trace_id), 10)
    tree = _trace(spans, trace_id)
    assert "media" not in tree  # no media, no span
    assert tree["engine"].attributes == {}  # and no media tokens
    stream = tree["stream"]
    assert stream.parent_id == tree["POST /v1/chat/completions"].span_id
    assert stream.attributes == {"nimctl.stream.events": 5, "nimctl.stream.complete": True}
    guards = receiver.wait_for(
        lambda spans: any(s.name == "guards" and s.status_code == 2 for s in spans), 10
    )
    failed = next(s for s in guards if s.name == "guards" and s.status_code == 2)
    server = next(
        s for s in guards if s.span_id == failed.parent_id and s.trace_id == failed.trace_id
    )
    assert server.attributes["http.response.status_code"] == 400
    assert "engine" not in _trace(guards, failed.trace_id)


async def test_probes_and_scrapes_are_not_traced(traced, receiver):
    for path in ("/v1/health/live", "/v1/health/ready", "/v1/metrics", "/v1/models"):
        assert (await traced.client.get(path)).status_code == 200
    await traced.flushed()
    spans = receiver.wait_for(lambda spans: any(s.name == "GET /v1/models" for s in spans), 10)
    assert not [s for s in spans if "/health/" in s.name or "metrics" in s.name]


def test_the_otlp_target_follows_the_otel_variables():
    assert OtlpTarget.from_environ({}) == OtlpTarget(
        "http/protobuf", "http://localhost:4318/v1/traces"
    )
    assert OtlpTarget.from_environ(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318/"}
    ).endpoint == ("http://otel:4318/v1/traces")
    assert OtlpTarget.from_environ(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    ) == OtlpTarget("grpc", "http://otel:4318")
    assert (
        OtlpTarget.from_environ(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9/x",
            }
        ).endpoint
        == "http://traces:9/x"
    )
    with pytest.raises(ValueError, match="http/json"):
        OtlpTarget.from_environ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
