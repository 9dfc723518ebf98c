"""Fixtures of the reliability suite; its helpers are in tests/support/reliability.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.reliability import FIGURES_DIR, FULL, Figures


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    collected = Figures()
    yield collected
    if collected.entries:
        collected.write(FIGURES_DIR / f"figures-{'full' if FULL else 'ci'}.json")
