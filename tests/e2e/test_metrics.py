"""The engine's `vllm:` series are scraped from NIM's metrics path."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.tiny import TINY_MODEL


def scrape(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/v1/metrics").text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels.get("finished_reason")
    }


def test_engine_series_count_requests(tiny_server):
    before = scrape(tiny_server.base_url).get("vllm:generation_tokens_total", 0.0)
    httpx.post(
        f"{tiny_server.base_url}/v1/chat/completions",
        json={
            "model": TINY_MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 5,
            "min_tokens": 5,
        },
        timeout=60,
    ).raise_for_status()
    after = scrape(tiny_server.base_url)
    assert after["vllm:generation_tokens_total"] - before == 5
    assert "vllm:num_requests_running" in after
    assert "vllm:kv_cache_usage_perc" in after
    text = httpx.get(f"{tiny_server.base_url}/metrics").text
    assert "vllm:prompt_tokens_total" in text
