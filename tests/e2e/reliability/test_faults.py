"""Faults: a hundred dropped streams, a trickling image URL, SIGTERM with streams in flight,
and (full run) a killed engine process."""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.support.errors import assert_error_shape
from tests.support.image_server import ImageServer
from tests.support.reliability import FULL
from tests.support.server import Server, start_server
from tests.support.tiny import TINY_MEDIA_ENV, TINY_MODEL
from tests.support.waiting import metric, wait_for

USER = [{"role": "user", "content": "Tell me everything"}]
SHORT = {"model": TINY_MODEL, "messages": USER, "max_tokens": 4}


def stream_body(tokens: int) -> dict[str, object]:
    return {
        "model": TINY_MODEL,
        "messages": USER,
        "max_tokens": tokens,
        "min_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


# --- shared tiny server -----------------------------------------------------------------------


def test_100_dropped_streams_release_the_engine(tiny_server, figures):
    """100 long streams, the engine full (64 running, the rest waiting), all dropped at once."""
    streams = 100
    generated_before = metric(tiny_server, "vllm:generation_tokens_total")

    async def open_and_drop() -> tuple[int, float]:
        limits = httpx.Limits(max_connections=streams + 10)
        async with httpx.AsyncClient(
            base_url=tiny_server.base_url, timeout=120, limits=limits
        ) as client:
            streaming = 0

            async def one() -> None:
                nonlocal streaming
                async with client.stream(
                    "POST", "/v1/chat/completions", json=stream_body(4000)
                ) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            streaming += 1
                            break
                    await asyncio.Event().wait()  # hold the stream open until dropped

            tasks = [asyncio.create_task(one()) for _ in range(streams)]
            began = time.monotonic()
            while streaming < 60 and time.monotonic() - began < 120:
                await asyncio.sleep(0.05)
            seen = streaming
            for task in tasks:
                task.cancel()  # leaving the stream block closes the connection mid-stream
            await asyncio.gather(*tasks, return_exceptions=True)
            return seen, time.monotonic()

    seen, dropped_at = asyncio.run(open_and_drop())
    assert seen >= 60, f"only {seen} streams started"

    def idle() -> bool:
        running = metric(tiny_server, "vllm:num_requests_running")
        waiting = metric(tiny_server, "vllm:num_requests_waiting")
        return running == 0 and waiting == 0

    wait_for(idle, 30)
    took = time.monotonic() - dropped_at
    tokens = metric(tiny_server, "vllm:generation_tokens_total") - generated_before
    figures.record(
        "dropped_streams",
        streams=streams,
        streaming_when_dropped=seen,
        seconds_to_idle=round(took, 3),
        tokens_generated=int(tokens),
        tokens_asked=streams * 4000,
    )
    # The time is a figure, not an assertion (a loaded machine can stall this process); that the
    # work stopped is shown by the tokens: a quarter of what was asked, and idle within 30 s.
    assert tokens < streams * 4000 / 4


@pytest.fixture(scope="module")
def trickle() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.trickle("/slow.png", 10_000, bytes_per_second=50)
        yield server


def test_trickling_image_url_times_out_while_others_flow(tiny_server, trickle, figures):
    url = f"http://localhost:{trickle.port}/slow.png"
    slow_body = {
        **SHORT,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    outcome: dict[str, object] = {}

    def slow() -> None:
        began = time.monotonic()
        response = httpx.post(
            f"{tiny_server.base_url}/v1/chat/completions", json=slow_body, timeout=60
        )
        outcome.update(response=response, seconds=time.monotonic() - began)

    thread = threading.Thread(target=slow)
    thread.start()
    latencies: list[float] = []
    with httpx.Client(base_url=tiny_server.base_url, timeout=60) as client:
        while thread.is_alive():
            began = time.monotonic()
            response = client.post("/v1/chat/completions", json=SHORT)
            assert response.status_code == 200, response.text
            latencies.append(time.monotonic() - began)
    thread.join()
    response = outcome["response"]
    assert isinstance(response, httpx.Response)
    assert 400 <= response.status_code < 500, response.text
    error = assert_error_shape(response.json(), response.status_code)
    assert "timeout" in error["message"], error
    assert len(latencies) >= 3, "other requests did not flow while the slow fetch hung"
    fetch_timeout = float(TINY_MEDIA_ENV["NIM_MEDIA_FETCH_TIMEOUT"])
    figures.record(
        "trickling_url",
        status=response.status_code,
        seconds_to_refusal=round(float(outcome["seconds"]), 2),
        fetch_timeout_s=fetch_timeout,
        other_requests_meanwhile=len(latencies),
        their_p50_ms=round(statistics.median(latencies) * 1000, 1),
        their_max_ms=round(max(latencies) * 1000, 1),
    )


# --- servers of their own: these faults end the server ------------------------------------------


@pytest.fixture
def own_server(tmp_path) -> Iterator[Server]:
    server = start_server("tiny", tmp_path / "nimctl.log")
    yield server
    server.stop(timeout=5)


@pytest.mark.skipif(
    not FULL,
    reason="full run only; CI covers it in tests/e2e/test_operations.py "
    "(test_sigterm_lets_streams_finish_then_exits_0, four streams)",
)
def test_sigterm_with_8_streams_in_flight_lets_all_complete(own_server, figures):
    tokens = 1500
    url = f"{own_server.base_url}/v1/chat/completions"
    events: list[list[str]] = [[] for _ in range(8)]
    started = threading.Semaphore(0)

    def consume(index: int) -> None:
        first = True
        with httpx.stream("POST", url, json=stream_body(tokens), timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events[index].append(line)
                    if first:
                        started.release()
                        first = False

    readers = [threading.Thread(target=consume, args=(i,)) for i in range(8)]
    for reader in readers:
        reader.start()
    for _ in readers:
        assert started.acquire(timeout=60)
    signalled = time.monotonic()
    own_server.process.send_signal(signal.SIGTERM)
    for reader in readers:
        reader.join(120)
    code = own_server.process.wait(60)
    exited = time.monotonic() - signalled
    completed = 0
    for stream in events:
        assert stream[-1] == "data: [DONE]", stream[-3:]
        usage = json.loads(stream[-2].removeprefix("data: "))["usage"]
        assert usage["completion_tokens"] == tokens
        completed += 1
    assert code == 0, own_server.log_tail()
    figures.record(
        "sigterm_drain",
        streams_in_flight=8,
        completed=completed,
        tokens_each=tokens,
        seconds_sigterm_to_exit=round(exited, 2),
        exit_code=code,
    )


@pytest.mark.skipif(
    not FULL,
    reason="full run only; CI covers it in tests/e2e/test_operations.py "
    "(test_killed_engine_turns_ready_503_and_exits_non_zero)",
)
def test_killed_engine_turns_ready_503_and_exits_non_zero(own_server, figures):
    root = psutil.Process(own_server.process.pid)
    engines = [p for p in root.children(recursive=True) if "EngineCore" in p.name()]
    assert engines, [p.name() for p in root.children(recursive=True)]
    ready = f"{own_server.base_url}/v1/health/ready"
    assert httpx.get(ready).status_code == 200
    killed = time.monotonic()
    engines[0].kill()

    def not_ready() -> bool:
        try:
            return httpx.get(ready, timeout=1).status_code == 503
        except httpx.TransportError:
            return True  # already gone counts as not ready

    wait_for(not_ready, 10)
    to_503 = time.monotonic() - killed
    code = own_server.process.wait(30)
    to_exit = time.monotonic() - killed
    figures.record(
        "killed_engine",
        seconds_to_ready_503=round(to_503, 3),
        seconds_to_exit=round(to_exit, 2),
        exit_code=code,
    )
    assert code != 0
    assert to_503 <= 2.0, f"ready answered 200 for {to_503:.2f} s after the engine died"
