"""What tracing (NIM_ENABLE_OTEL) costs per request, in-process: the whole ASGI app with the
fake engine, tracing off against on.

On, the spans go through the SDK's BatchSpanProcessor (as in `nimctl serve`) to an in-memory
exporter, so the figure is the request path's cost (span creation, attributes, the queue), not
the network's; the batch export runs on the processor's own thread and is not in it (CPU time
of the request's thread is measured, which also keeps other processes on a shared machine out).

Run: `python -m bench.tracing [--requests N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry

from nimctl.api import create_app
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from nimctl.settings import NimSettings
from nimctl.tracing import Tracing
from tests.support.fake_engine import FakeEngine
from tests.support.media import image_data_url

BODIES = {
    "text": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    "stream": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True},
    "image": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what?"},
                    {"type": "image_url", "image_url": {"url": image_data_url("PNG", (16, 16))}},
                ],
            }
        ],
        "max_tokens": 3,
    },
}


def _tracing() -> Tracing:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    return Tracing(provider)


class _Client:
    """Sends the body, then stays connected (a disconnect would cancel the request)."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self._never = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._never.wait()
        return {"type": "http.disconnect"}


async def _requests(app: Any, body: bytes, count: int) -> float:
    """CPU seconds of this thread for `count` requests, answered in full."""
    scope: MutableMapping[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ],
    }
    statuses = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    began = time.thread_time()
    for _ in range(count):
        await app(dict(scope), _Client(body).receive, send)
    took = time.thread_time() - began
    assert set(statuses) == {200}, statuses
    return took


async def _measure(requests: int, rounds: int) -> None:
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    apps = {}
    for name, tracing in (("off", None), ("on", _tracing())):
        engine = FakeEngine(served_model_name=profile.served_model_name)
        app = create_app(
            NimSettings(), profile, engine, registry=CollectorRegistry(), tracing=tracing
        )
        app.state.nimctl.supervisor.health_interval_s = 3600
        engine.release.set()
        apps[name] = (app, app.router.lifespan_context(app))
    for _, lifespan in apps.values():
        await lifespan.__aenter__()
    try:
        while any(a.state.nimctl.supervisor.state.value != "ready" for a, _ in apps.values()):
            await asyncio.sleep(0.01)
        for kind, payload in BODIES.items():
            body = json.dumps(payload).encode()
            best = {"off": float("inf"), "on": float("inf")}
            for _ in range(rounds):  # alternated, so drift in machine load hits both
                for name, (app, _) in apps.items():
                    await _requests(app, body, requests // 10)  # warm
                    best[name] = min(best[name], await _requests(app, body, requests))
            off, on = (best[n] / requests * 1e6 for n in ("off", "on"))
            print(
                f"{kind:6}: off {off:7.1f} us/request, on {on:7.1f} us/request, "
                f"tracing adds {on - off:6.1f} us"
            )
    finally:
        for _, lifespan in apps.values():
            await lifespan.__aexit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(_measure(args.requests, args.rounds))


if __name__ == "__main__":
    main()
