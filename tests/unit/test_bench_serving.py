"""The serving benchmark's design: counterbalanced turns, ratios with their spread, the A/A run."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from bench import serving


def _result(plan: serving.Plan, a: list[float], b: list[float]) -> dict[str, Any]:
    """A saved run whose every figure is `a` (A) and `b` (B) per round."""

    def row(value: float) -> dict[str, Any]:
        keepalive = (
            "ttft_ms",
            "ttft_min_ms",
            "head_ms",
            "first_byte_ms",
            "total_ms",
            "models_ms",
            "cpu_ms_per_request",
        )
        load = ("output_throughput", "median_ttft_ms", "cpu_ms_per_request")
        return {
            "keepalive": dict.fromkeys(keepalive, value),
            "load": {c: dict.fromkeys(load, value) for c in plan.concurrencies},
        }

    return {
        "plan": asdict(plan),
        "input_len": 128,
        "output_len": 128,
        "keepalive_tokens": 64,
        "per_round": {"nimctl": [row(v) for v in a], "vllm": [row(v) for v in b]},
        "failures": [],
        "startup": {n: {"live_s": 1.0, "ready_s": 40.0} for n in serving.NAMES},
        "peak_rss_gib": dict.fromkeys(serving.NAMES, 2.5),
        "seconds": 300.0,
    }


def test_turns_alternate_which_server_goes_first() -> None:
    plan = serving.plan_for(quick=True, rounds=4)
    turns = [serving.order(plan, r) for r in range(4)]
    assert turns == [("nimctl", "vllm"), ("vllm", "nimctl")] * 2
    fixed = replace(plan, counterbalanced=False)
    assert {serving.order(fixed, r) for r in range(4)} == {("nimctl", "vllm")}


def test_ratios_carry_their_spread_over_rounds() -> None:
    plan = serving.plan_for(quick=True, rounds=3)
    table = serving.summarize(_result(plan, [10.0, 12.0, 9.0], [10.0, 10.0, 10.0]))["table"]
    row = table[0]
    assert (row["ratio_min"], row["ratio_median"], row["ratio_max"]) == (0.9, 1.0, 1.2)
    text = serving.report(serving.summarize(_result(plan, [10.0, 12.0, 9.0], [10.0] * 3)))
    assert "| 1.000 | 0.90-1.20 |" in text
    assert "A then B in odd rounds, B then A in even ones" in text


def test_a_run_saved_before_counterbalancing_says_so() -> None:
    plan = serving.plan_for(quick=True, rounds=3)
    saved = _result(plan, [1.0] * 3, [1.0] * 3)
    del saved["plan"]["counterbalanced"]
    assert "A then B in each" in serving.report(serving.summarize(saved))


def test_the_noise_floor_run_names_its_baseline_and_sets_no_targets() -> None:
    plan = replace(serving.plan_for(quick=True, rounds=3), baseline="nimctl")
    assert plan.section == "serving-noise"
    text = serving.report(serving.summarize(_result(plan, [1.0] * 3, [1.0] * 3)))
    assert "second nimctl (B)" in text
    assert "--baseline nimctl" in text
    assert "vllm.entrypoints" not in text
    assert "Targets" not in text


def test_the_probe_is_compared_round_by_round_with_its_sample_count() -> None:
    plan = replace(serving.plan_for(quick=True, rounds=3), probe=True)
    assert plan.probe_prompts_for(32) > plan.prompts_for(32)  # enough probes for a p99
    saved = _result(plan, [1.0] * 3, [1.0] * 3)
    for name, p99s in (("nimctl", [30.0, 40.0, 20.0]), ("vllm", [40.0, 40.0, 40.0])):
        for row, p99 in zip(saved["per_round"][name], p99s, strict=True):
            row["probe"] = {"median_ms": 5.0, "p99_ms": p99, "max_ms": 90.0, "n": 250}
    saved["probe_under_load"] = {
        n: {"median_ms": 5.0, "p99_ms": 35.0, "max_ms": 90.0, "n": 750} for n in serving.NAMES
    }
    result = serving.summarize(saved)
    row = next(r for r in result["table"] if r["figure"] == "probe p99 while 16 streams run")
    assert (row["ratio_min"], row["ratio_median"], row["ratio_max"]) == (0.5, 0.75, 1.0)
    text = serving.report(result)
    assert "all rounds pooled (750 / 750 samples)" in text
    assert "concurrency 16 (`--num-prompts` 128)" in text


def test_a_run_saved_without_per_round_probes_keeps_its_pooled_row() -> None:
    plan = replace(serving.plan_for(quick=True, rounds=3), probe=True)
    saved = _result(plan, [1.0] * 3, [1.0] * 3)
    saved["probe_under_load"] = {
        n: {"median_ms": 5.0, "p99_ms": 35.0, "max_ms": 90.0} for n in serving.NAMES
    }
    result = serving.summarize(saved)
    assert not [r for r in result["table"] if r["figure"].startswith("probe")]
    assert "| probe latency while 16 streams run, p50 / p99 |" in serving.report(result)
