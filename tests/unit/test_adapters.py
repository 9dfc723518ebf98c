"""NIM_PEFT_SOURCE: the scan and diff (pure), and the sync that loads, unloads and refuses."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from nimctl.adapters import AdapterSync, diff, scan
from nimctl.errors import ConfigError
from tests.support.fake_engine import FakeEngine


def adapter(root: Path, name: str, rank: int = 8) -> Path:
    """A directory the scan counts as an adapter (the fake engine reads only the config)."""
    path = root / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    return path


def test_scan_finds_complete_adapters_by_directory_name(tmp_path: Path):
    a = adapter(tmp_path, "team-a")
    adapter(tmp_path, ".copying")  # hidden: still being copied in
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "adapter_config.json").write_text("{}")
    (tmp_path / "stray-file").write_text("x")
    assert scan(tmp_path) == {"team-a": a}


async def test_a_directory_gone_for_a_while_unloads_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    root = tmp_path / "adapters"
    a = adapter(root, "a")
    engine = FakeEngine()
    sync = AdapterSync(engine, root, None)
    await sync.first_sync()
    root.rename(tmp_path / "elsewhere")  # an unmounted volume, say
    with pytest.raises(FileNotFoundError):
        scan(root)
    with caplog.at_level(logging.WARNING, logger="nimctl.adapters"):
        await sync.sync()
        await sync.sync()
    assert engine.adapters == {"a": a}
    assert len(caplog.records) == 1 and "cannot read" in caplog.records[0].getMessage()
    (tmp_path / "elsewhere").rename(root)
    (a / "adapter_config.json").unlink()
    await sync.sync()
    assert engine.adapters == {}


def test_diff_loads_new_unloads_gone_and_reloads_moved():
    loaded = {"keep": Path("/a/keep"), "gone": Path("/a/gone"), "moved": Path("/a/moved")}
    found = {"keep": Path("/a/keep"), "new": Path("/a/new"), "moved": Path("/b/moved")}
    changes = diff(found, loaded)
    assert changes.load == {"moved": Path("/b/moved"), "new": Path("/a/new")}
    assert changes.unload == ("gone", "moved")
    assert diff(found, found).load == {} and diff(found, found).unload == ()


async def test_sync_loads_and_unloads_with_the_directory(tmp_path: Path):
    engine = FakeEngine()
    sync = AdapterSync(engine, tmp_path, None)
    a = adapter(tmp_path, "a")
    await sync.first_sync()
    assert engine.adapters == {"a": a}
    b = adapter(tmp_path, "b")
    await sync.sync()
    assert engine.adapters == {"a": a, "b": b}
    (a / "adapter_config.json").unlink()
    await sync.sync()
    assert engine.adapters == {"b": b}


async def test_refused_adapter_is_logged_once_and_retried_only_when_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    engine = FakeEngine()
    calls: list[str] = []
    load = engine.load_adapter

    async def counted(name: str, path: Path) -> None:
        calls.append(name)
        await load(name, path)

    engine.load_adapter = counted  # type: ignore[method-assign]
    sync = AdapterSync(engine, tmp_path, None)
    adapter(tmp_path, "good")
    big = adapter(tmp_path, "big", rank=64)
    with caplog.at_level(logging.INFO, logger="nimctl.adapters"):
        await sync.first_sync()
        await sync.sync()
        await sync.sync()
    assert set(engine.adapters) == {"good"}
    assert calls == ["big", "good"]
    refusals = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert refusals == [
        f"LoRA adapter big refused ({big}): LoRA rank 64 is greater than max_lora_rank 8."
    ]
    # Fixed in place (newer mtime): tried again, and loads.
    config = big / "adapter_config.json"
    config.write_text(json.dumps({"r": 4}))
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    await sync.sync()
    assert set(engine.adapters) == {"good", "big"} and calls[-1] == "big"


async def test_removed_refused_adapter_is_forgotten(tmp_path: Path):
    engine = FakeEngine()
    sync = AdapterSync(engine, tmp_path, None)
    big = adapter(tmp_path, "big", rank=64)
    await sync.sync()
    assert "big" in sync.refused
    for file in big.iterdir():
        file.unlink()
    big.rmdir()
    await sync.sync()
    assert sync.refused == {}


async def test_first_sync_needs_the_directory(tmp_path: Path):
    with pytest.raises(ConfigError, match="NIM_PEFT_SOURCE"):
        await AdapterSync(FakeEngine(), tmp_path / "absent", None).first_sync()


async def test_refresh_loop_picks_up_changes_and_stops(tmp_path: Path):
    engine = FakeEngine()
    sync = AdapterSync(engine, tmp_path, 0.01)
    await sync.first_sync()
    sync.start()
    try:
        adapter(tmp_path, "late")
        for _ in range(500):
            if "late" in engine.adapters:
                break
            await asyncio.sleep(0.01)
        assert "late" in engine.adapters
    finally:
        await sync.stop()
    assert sync._task is None
