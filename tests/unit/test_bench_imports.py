"""Every benchmark module and the soak import against the code as it is now.

`make bench` runs rarely and `make lint` checks only nimctl/, so a name moved inside nimctl
broke `bench.intake` (it imported `parse_allowlist` from its old module) without a test
failing. Importing is cheap: no benchmark module starts anything or imports vLLM at import.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench

MODULES = sorted(
    [f"bench.{m.name}" for m in pkgutil.iter_modules(bench.__path__)]
    + ["tests.e2e.reliability.soak", "tests.e2e.reliability.report"]
)


def test_every_benchmark_module_is_listed():
    assert {"bench.intake", "bench.paired", "bench.serving", "bench.ceiling"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_the_module_imports(name):
    importlib.import_module(name)  # an ImportError fails it
