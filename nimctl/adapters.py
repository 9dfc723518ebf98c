"""LoRA adapters from `NIM_PEFT_SOURCE`: the directory, scanned, kept in step with the engine.

The directory is the source of truth (NIM 2.x's static and dynamic PEFT): each sub-directory
with PEFT files is an adapter whose name is the sub-directory's. At start every adapter found is
loaded before the server turns ready; with `NIM_PEFT_REFRESH_INTERVAL` the directory is scanned
again that often, and what appeared is loaded, what went away unloaded. Loading and unloading
are the engine's (vLLM's own model registry); this module only decides what to ask for.

An adapter the engine refuses (rank too high, modules the model lacks, broken config) is logged
once, with the reason, and not asked for again until its files change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nimctl.engine.base import AdapterRefusedError, Engine
from nimctl.settings import require_peft_directory

logger = logging.getLogger("nimctl.adapters")

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")

# What a refused adapter's files looked like when refused: (file name, size, mtime in ns).
Fingerprint = tuple[tuple[str, int, int], ...]


def scan(directory: Path) -> dict[str, Path]:
    """The adapters in `directory`: name -> sub-directory, for each sub-directory holding an
    adapter config and weights. Hidden entries are skipped, so that an adapter can be copied
    in under a dot-name and renamed into place once complete (and a ConfigMap's `..data`).

    OSError if the directory cannot be read: that is not "no adapters" (a volume that went
    away for a moment must not unload every adapter).
    """
    found: dict[str, Path] = {}
    with os.scandir(directory) as entries:
        listed = list(entries)
    for entry in listed:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        path = Path(entry.path)
        if (path / CONFIG_FILE).is_file() and any((path / f).is_file() for f in WEIGHT_FILES):
            found[entry.name] = path
    return found


@dataclass(frozen=True)
class Changes:
    load: dict[str, Path]
    unload: tuple[str, ...]


def diff(found: Mapping[str, Path], loaded: Mapping[str, Path]) -> Changes:
    """What to load and unload so that the engine holds what the directory has. An adapter whose
    directory moved (a symlink retargeted) is unloaded and loaded again from the new path."""
    moved = {name for name, path in loaded.items() if name in found and found[name] != path}
    unload = tuple(sorted(name for name in loaded if name not in found or name in moved))
    load = {name: found[name] for name in sorted(found) if name not in loaded or name in moved}
    return Changes(load, unload)


def fingerprint(path: Path) -> Fingerprint:
    """The adapter's files, by size and modification time: a refused adapter is tried again
    only once this changes (it has been fixed or replaced)."""
    parts = []
    for name in (CONFIG_FILE, *WEIGHT_FILES):
        with contextlib.suppress(OSError):
            stat = (path / name).stat()
            parts.append((name, stat.st_size, stat.st_mtime_ns))
    return tuple(parts)


class AdapterSync:
    """Keeps the engine's adapters equal to the directory's. `sync()` once at start (before
    ready); `start()` the refresh loop when an interval is set; `stop()` at shutdown."""

    def __init__(self, engine: Engine[Any], directory: Path, interval_s: float | None) -> None:
        self._engine = engine
        self._directory = directory
        self._interval_s = interval_s
        self._refused: dict[str, Fingerprint] = {}
        self._unreadable = False  # the last scan failed (logged once)
        self._task: asyncio.Task[None] | None = None

    @property
    def refused(self) -> Mapping[str, Fingerprint]:
        return self._refused

    async def first_sync(self) -> None:
        """Load what the directory holds at start; ConfigError if it is not a directory."""
        await asyncio.to_thread(require_peft_directory, self._directory)
        await self.sync()
        logger.info(
            "LoRA adapters from %s: %d loaded, %d refused%s",
            self._directory,
            len(self._engine.adapters),
            len(self._refused),
            f"; rescanned every {self._interval_s:g} s" if self._interval_s else "",
        )

    async def sync(self) -> None:
        # Reading a directory (possibly a network volume) is blocking I/O: off the loop.
        try:
            found = await asyncio.to_thread(scan, self._directory)
        except OSError as exc:
            if not self._unreadable:
                logger.warning("LoRA adapters kept as they are: cannot read %s", exc)
            self._unreadable = True
            return
        if self._unreadable:
            logger.info("LoRA adapter directory %s readable again", self._directory)
            self._unreadable = False
        changes = diff(found, self._engine.adapters)
        for name in changes.unload:
            await self._engine.unload_adapter(name)
            logger.info("LoRA adapter %s unloaded: gone from %s", name, self._directory)
        for name in set(self._refused) - set(found):
            del self._refused[name]  # removed: forget, so that a new one of that name is tried
        for name, path in changes.load.items():
            await self._load(name, path)

    async def _load(self, name: str, path: Path) -> None:
        prints = await asyncio.to_thread(fingerprint, path)
        if self._refused.get(name) == prints:
            return
        try:
            await self._engine.load_adapter(name, path)
        except AdapterRefusedError as exc:
            self._refused[name] = prints
            logger.error("LoRA adapter %s refused (%s): %s", name, path, exc)
            return
        self._refused.pop(name, None)
        logger.info("LoRA adapter %s loaded from %s", name, path)

    def start(self) -> None:
        if self._interval_s is not None and self._task is None:
            self._task = asyncio.create_task(self._refresh(self._interval_s), name="nimctl-lora")

    async def _refresh(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed scan must not end refreshing for good
                logger.exception("LoRA adapter refresh of %s failed", self._directory)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
