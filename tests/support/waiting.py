"""Waiting for a server's state, and reading its metrics, in end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metric(server: Any, name: str, **labels: str) -> float:
    """The sum of series `name` (with these labels) in the server's /v1/metrics."""
    text = httpx.get(f"{server.base_url}/v1/metrics").text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def wait_for(predicate: Callable[[], Any], timeout: float) -> float:
    """Seconds until `predicate()` is true; AssertionError after `timeout` (a deadline, never a
    measurement: a loaded machine can be slow)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if predicate():
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def until_answered(
    attempt: Callable[[], None], answered: Callable[[], bool], tries: int = 3
) -> None:
    """Run `attempt` (one request), again if the server closed the connection before any answer.

    nimctl closes a connection whose request head has not arrived within
    NIM_REQUEST_HEADER_TIMEOUT (20 s), as a slowloris defence; on a loaded 2-core machine this
    test process has been seen stalled for 46-53 s between connecting and sending, so such a
    close says nothing about what is tested. A failure after the first answer is raised.
    """
    for left in range(tries - 1, -1, -1):
        try:
            attempt()
            return
        except httpx.RemoteProtocolError:
            if answered() or not left:
                raise
