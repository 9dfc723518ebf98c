"""The reliability suite's sizes (CI or full), figures and memory readings."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import psutil

from tests.support.server import REPO

FULL = os.environ.get("NIMCTL_RELIABILITY") == "full"
FIGURES_DIR = REPO / ".cache" / "reliability"


def size(ci: int, full: int) -> int:
    """How much of something to do: the CI part keeps `make test` short."""
    return full if FULL else ci


class Figures:
    """What the suite measured, for docs/reliability.md (written by `report.py`)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def record(self, name: str, **values: Any) -> None:
        self.entries.setdefault(name, {}).update(values)
        print(f"\n{name}: {values}")

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "mode": "full" if FULL else "ci",
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
            "figures": self.entries,
        }
        path.write_text(json.dumps(document, indent=2))


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its children (vLLM's engine core and worker)."""
    root = psutil.Process(pid)
    total = 0
    for process in (root, *root.children(recursive=True)):
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total
