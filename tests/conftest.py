"""Markers by folder: tests/unit -> unit, tests/api -> api, tests/e2e -> e2e."""

from __future__ import annotations

from pathlib import Path

import pytest

_LAYERS = ("unit", "api", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in _LAYERS:
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))
