"""Load: many requests at concurrency 64 (text, streams and images mixed): no errors, and the
server's memory (its whole process tree) does not grow by more than 10 %."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx

from tests.support.media import image_data_url
from tests.support.reliability import size, tree_rss
from tests.support.tiny import TINY_MODEL

REQUESTS = size(ci=200, full=1000)
CONCURRENCY = 64
IMAGE = image_data_url("PNG", (64, 48), "blue")


def request_body(index: int) -> dict[str, Any]:
    text = f"Request {index}: describe the weather in {index % 97} words."
    content: Any = text
    if index % 4 == 1:
        content = [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": IMAGE}},
        ]
    return {
        "model": TINY_MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        "stream": index % 4 == 0,
    }


async def load(base_url: str, count: int, offset: int = 0) -> tuple[list[str], list[float], float]:
    """Send `count` requests, CONCURRENCY at a time; errors (described) and latencies."""
    errors: list[str] = []
    latencies: list[float] = []
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY)

    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:

        async def one(index: int) -> None:
            body = request_body(index)
            async with gate:
                began = time.monotonic()
                try:
                    response = await client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    errors.append(f"{index}: {type(exc).__name__}: {exc}")
                    return
                latencies.append(time.monotonic() - began)
            if response.status_code != 200:
                errors.append(f"{index}: {response.status_code} {response.text[:200]}")
            elif body["stream"]:
                if not response.text.rstrip().endswith("data: [DONE]"):
                    errors.append(f"{index}: the stream did not end with [DONE]")
            elif not response.json().get("choices"):
                errors.append(f"{index}: no choices in {response.text[:200]}")

        began = time.monotonic()
        await asyncio.gather(*(one(offset + i) for i in range(count)))
        return errors, latencies, time.monotonic() - began


def test_load_at_concurrency_64_without_errors_or_growth(tiny_server, figures):
    # Warm-up: first requests fill caches (tokenizer, processor, prefix cache) that then stay.
    warm_errors, _, _ = asyncio.run(load(tiny_server.base_url, 2 * CONCURRENCY, offset=10**6))
    assert not warm_errors, warm_errors[:5]
    time.sleep(1)
    before = tree_rss(tiny_server.process.pid)
    errors, latencies, seconds = asyncio.run(load(tiny_server.base_url, REQUESTS))
    time.sleep(1)
    after = tree_rss(tiny_server.process.pid)
    latencies.sort()
    figures.record(
        "load",
        requests=REQUESTS,
        concurrency=CONCURRENCY,
        errors=len(errors),
        requests_per_s=round(REQUESTS / seconds, 1),
        latency_p50_ms=round(statistics.median(latencies) * 1000, 1),
        latency_p99_ms=round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        rss_before_gib=round(before / 2**30, 3),
        rss_after_gib=round(after / 2**30, 3),
        rss_growth_pct=round((after - before) / before * 100, 2),
    )
    assert not errors, errors[:10]
    assert after <= before * 1.10, f"RSS grew from {before / 2**30:.2f} to {after / 2**30:.2f} GiB"
