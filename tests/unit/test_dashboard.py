"""The Grafana dashboard in deploy/: valid JSON, importable, and querying only series that exist."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from nimctl.metrics import NIM_ALIASES, NimctlMetrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "nimctl-dashboard.json"
# A series selector: a metric name followed by its label matchers.
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def _vllm_families() -> set[str]:
    """Metric names in the installed vLLM's stat logger, read from its source (not imported)."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.submodule_search_locations
    source = Path(next(iter(spec.submodule_search_locations))) / "v1" / "metrics" / "loggers.py"
    return set(re.findall(r'name="(vllm:[a-z_:]+)"', source.read_text()))


def _nimctl_families() -> set[str]:
    own = NimctlMetrics(lambda: ("ready", 1.0), {"version": "0"})
    return {family.name for family in own.registry.collect()}


def _family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_queried_series_is_one_nimctl_or_vllm_exports(dashboard):
    vllm = _vllm_families()
    assert "vllm:inter_token_latency_seconds" in vllm  # the list is read, not empty
    known = vllm | _nimctl_families() | set(NIM_ALIASES)
    known |= {"request_finish", "request_success", "request_failure"}
    queried = set()
    for expr in _expressions(dashboard):
        names = SELECTOR.findall(expr)
        assert names, f"no series selector in {expr!r}"
        queried.update(names)
    unknown = sorted(name for name in queried if _family(name) not in known)
    assert not unknown, f"the dashboard queries series nothing exports: {unknown}"


def test_the_panels_the_operator_needs_are_there(dashboard):
    queried = {_family(name) for expr in _expressions(dashboard) for name in SELECTOR.findall(expr)}
    for family in (
        "nimctl_http_requests",
        "time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "e2e_request_latency_seconds",
        "num_requests_running",
        "num_requests_waiting",
        "nimctl_requests_rejected",
        "gpu_cache_usage_perc",
        "nimctl_media_fetch_seconds",
        "nimctl_media_decode_seconds",
        "nimctl_media_request_bytes",
        "nimctl_media_request_image_pixels",
        "nimctl_media_request_video_frames",
        "nimctl_media_request_tokens",
        "nimctl_requests_refused",
        "nimctl_media_failures",
        "nimctl_event_loop_lag_seconds",
        "nimctl_chat_requests",
    ):
        assert family in queried, family


def test_it_imports_into_any_prometheus_datasource(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'job=~"$job"' in target["expr"], target["expr"]
