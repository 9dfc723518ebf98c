"""Admission control on the real server (the session's sharing server): a burst against
NIM_MAX_QUEUED_REQUESTS=2."""

from __future__ import annotations

import asyncio
import re
import threading

import httpx
import pytest

from tests.support.errors import assert_error_shape
from tests.support.server import Server
from tests.support.sharing import QUEUE_LIMIT, Sharing
from tests.support.tiny import TINY_MODEL
from tests.support.waiting import metric, wait_for

LIMIT = QUEUE_LIMIT


@pytest.fixture
def twin(sharing: Sharing) -> Server:
    return sharing.server


def _body(max_tokens: int, stream: bool = True) -> dict[str, object]:
    return {
        "model": TINY_MODEL,
        "messages": [{"role": "user", "content": "Count to a thousand."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }


def _engine_load(server) -> float:
    return metric(server, "num_requests_running") + metric(server, "num_requests_waiting")


def test_a_burst_gets_429_above_the_limit_and_the_rest_completes(twin):
    finished_before = metric(twin, "request_success_total")
    rejected_before = metric(twin, "nimctl_requests_rejected_total", reason="max_queued_requests")
    most_seen = 0.0
    stop = threading.Event()

    def watch() -> None:  # the engine's own count of requests, throughout the burst
        nonlocal most_seen
        while not stop.is_set():
            most_seen = max(most_seen, _engine_load(twin))

    async def burst() -> list[tuple[int, str, str | None]]:
        async with httpx.AsyncClient(base_url=twin.base_url, timeout=600) as client:

            async def one() -> tuple[int, str, str | None]:
                response = await client.post("/v1/chat/completions", json=_body(1500))
                return response.status_code, response.text, response.headers.get("retry-after")

            return await asyncio.gather(*(one() for _ in range(6)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers = asyncio.run(burst())
    finally:
        stop.set()
        watcher.join()
    ok = [text for status, text, _ in answers if status == 200]
    refused = [(text, retry) for status, text, retry in answers if status == 429]
    assert len(ok) + len(refused) == len(answers), answers
    assert len(ok) >= LIMIT and refused, [status for status, _, _ in answers]
    for text, retry in refused:
        assert retry == "1"
        assert (
            "NIM_MAX_QUEUED_REQUESTS"
            in assert_error_shape(httpx.Response(429, text=text).json(), 429)["message"]
        )
    for text in ok:
        assert text.rstrip().endswith("data: [DONE]")
    assert most_seen <= LIMIT
    # Only what was admitted reached the engine, and every refusal was counted.
    wait_for(lambda: metric(twin, "request_success_total") - finished_before == len(ok), 120)
    after = metric(twin, "nimctl_requests_rejected_total", reason="max_queued_requests")
    assert after - rejected_before == len(refused)


def test_streams_dropped_by_their_clients_give_their_places_back(twin):
    for _ in range(LIMIT):
        with httpx.stream(
            "POST", f"{twin.base_url}/v1/chat/completions", json=_body(8000), timeout=120
        ) as response:
            assert response.status_code == 200
            next(response.iter_lines())
        # leaving the block closes the connection mid-stream
    wait_for(lambda: _engine_load(twin) == 0, 120)
    answer = httpx.post(
        f"{twin.base_url}/v1/chat/completions", json=_body(2, stream=False), timeout=120
    )
    assert answer.status_code == 200, answer.text


def test_the_start_log_names_what_one_image_counts(twin):
    found = re.search(r"most tokens per media item: image (\d+)", twin.log_path.read_text())
    assert found and int(found.group(1)) > 0, twin.log_tail()
