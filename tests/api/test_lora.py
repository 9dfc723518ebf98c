"""LoRA adapters through the API, in-process with the fake engine: listed, served, counted,
refused, and refreshed from NIM_PEFT_SOURCE without a restart."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.errors import assert_error_shape

MODEL = "nimctl/tiny-vlm"


def adapter(root: Path, name: str, rank: int = 8) -> Path:
    path = root / name
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    return path


def chat_body(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def test_adapters_are_listed_after_the_base_model(make_harness, tmp_path):
    a, b = adapter(tmp_path, "team-b"), adapter(tmp_path, "team-a")
    adapter(tmp_path, "too-big", rank=64)
    async with make_harness(peft_source=tmp_path) as h:
        await h.make_ready()
        cards = (await h.client.get("/v1/models")).json()["data"]
    assert [card["id"] for card in cards] == [MODEL, "team-a", "team-b"]
    assert cards[0]["parent"] is None and cards[0]["root"] == MODEL
    for card, path in zip(cards[1:], (b, a), strict=True):
        assert card["root"] == str(path) and card["parent"] == MODEL
        assert set(card) == set(cards[0])


async def test_a_request_for_an_adapter_reaches_the_engine_and_is_counted(make_harness, tmp_path):
    adapter(tmp_path, "team-a")
    async with make_harness(peft_source=tmp_path) as h:
        await h.make_ready()
        response = await h.client.post("/v1/chat/completions", json=chat_body("team-a"))
        await h.client.post("/v1/chat/completions", json=chat_body(MODEL))
        await h.client.post("/v1/chat/completions", json=chat_body("nobody"))
        metrics = (await h.client.get("/v1/metrics")).text
    assert response.status_code == 200
    assert [r["model"] for r in h.engine.requests] == ["team-a", MODEL]
    families = text_string_to_metric_families(metrics)
    (family,) = [f for f in families if f.name == "nimctl_chat_requests"]
    counts = {s.labels["model_name"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert counts == {"team-a": 1.0, MODEL: 1.0}  # an unknown name is no label


async def test_the_openapi_model_is_any_listed_id_with_adapters(make_harness, tmp_path):
    async with make_harness(peft_source=tmp_path) as h:
        schema = (await h.client.get("/openapi.json")).json()
    model = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]
    assert model["type"] == "string" and model["examples"] == [MODEL] and "enum" not in model


async def test_unknown_and_refused_models_are_404_in_the_openai_shape(make_harness, tmp_path):
    adapter(tmp_path, "too-big", rank=64)
    async with make_harness(peft_source=tmp_path) as h:
        await h.make_ready()
        for name in ("too-big", "nobody"):
            response = await h.client.post("/v1/chat/completions", json=chat_body(name))
            assert response.status_code == 404
            error = assert_error_shape(response.json(), 404)
            assert error["param"] == "model" and f"`{name}` does not exist" in error["message"]
    assert h.engine.requests == []


async def test_the_directory_is_followed_without_a_restart(make_harness, tmp_path):
    gone = adapter(tmp_path, "gone")
    async with make_harness(peft_source=tmp_path, peft_refresh_interval=0.01) as h:
        await h.make_ready()
        shutil.rmtree(gone)
        adapter(tmp_path, "new")
        for _ in range(500):
            ids = [c["id"] for c in (await h.client.get("/v1/models")).json()["data"]]
            if ids == [MODEL, "new"]:
                break
            await asyncio.sleep(0.01)
        assert ids == [MODEL, "new"]
        response = await h.client.post("/v1/chat/completions", json=chat_body("gone"))
        assert response.status_code == 404
    assert h.app.state.nimctl.supervisor.adapters._task is None  # stopped with the app


async def test_a_missing_peft_source_fails_start_as_a_configuration_error(make_harness, tmp_path):
    async with make_harness(peft_source=tmp_path / "absent") as h:
        h.engine.release.set()
        supervisor = h.app.state.nimctl.supervisor
        await asyncio.wait_for(supervisor.fatal.wait(), 5)
        assert supervisor.exit_code == 2 and "NIM_PEFT_SOURCE" in supervisor.reason
