"""Cost of a Prometheus scrape of `nimctl serve` (the tiny model, after some traffic)."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.servers import start_nimctl

SCRAPES = 200


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as logs:
        server = start_nimctl("tiny", Path(logs) / "nimctl.log")
        try:
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                body = {
                    "model": "nimctl/tiny-vlm",
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": "Hello"}],
                }
                for _ in range(20):  # fill the histograms
                    client.post("/v1/chat/completions", json=body).raise_for_status()
                times, size = [], 0
                for _ in range(SCRAPES):
                    start = time.perf_counter()
                    response = client.get("/v1/metrics")
                    times.append(time.perf_counter() - start)
                    size = len(response.content)
        finally:
            server.stop()
    times.sort()
    return {
        "scrapes": SCRAPES,
        "median_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 2),
        "bytes": size,
    }


def report(result: dict[str, Any]) -> str:
    return (
        "Command: `make bench` (this part: `python -m bench.scrape`).\n\n"
        f"{result['scrapes']} scrapes of `/v1/metrics` from `nimctl serve --profile tiny` after "
        "20 chat requests, over HTTP on 127.0.0.1 (client-side time, so it includes the "
        "request itself):\n\n"
        "| median ms | p99 ms | body bytes |\n|---|---|---|\n"
        f"| {result['median_ms']} | {result['p99_ms']} | {result['bytes']:,} |\n\n"
        "Target: 10 ms."
    )


if __name__ == "__main__":
    from bench.report import write_section

    outcome = run()
    json.dump(outcome, sys.stdout, indent=2)
    print()
    write_section("scrape", "Metrics scrape", report(outcome))
