"""The paired-block benchmark's arithmetic: pair ratios, their interval, and the verdicts."""

from __future__ import annotations

import os
import threading

import pytest

from bench import paired


def test_pairs_are_compared_pair_by_pair_not_as_two_pools():
    # B's blocks drift 2x over the run and A is 10 % above B in every pair: every pair ratio,
    # the interval and the pooled ratio see 1.10 exactly.
    b = [10.0, 20.0, 12.0, 18.0, 14.0]
    a = [x * 1.1 for x in b]
    figure = paired.compare(a, b)
    assert figure["ratio"] == pytest.approx(1.1)
    assert figure["low"] == pytest.approx(1.1) and figure["high"] == pytest.approx(1.1)
    assert figure["pooled"] == pytest.approx(1.1)
    assert figure["a"] == pytest.approx(15.4) and figure["b"] == pytest.approx(14.0)


def test_the_ratio_is_the_median_pair_not_the_ratio_of_the_two_medians():
    b = [10.0, 20.0, 30.0, 40.0, 50.0]
    a = [11.0, 22.0, 24.0, 44.0, 55.0]  # 10 % above in four pairs of five, 20 % under in one
    figure = paired.compare(a, b)
    assert figure["a"] / figure["b"] == pytest.approx(0.8)  # what the medians alone would say
    assert figure["ratio"] == pytest.approx(1.1)


def test_the_interval_widens_with_noise_and_holds_the_median():
    quiet = paired.bootstrap_median([0.99 + 0.02 * i / 30 for i in range(31)])
    noisy = paired.bootstrap_median([0.7 + 0.6 * i / 30 for i in range(31)])
    assert quiet[0] <= 1.0 <= quiet[1]
    assert noisy[0] <= 1.0 <= noisy[1]
    assert noisy[1] - noisy[0] > quiet[1] - quiet[0]


def test_the_interval_is_the_same_for_the_same_data():
    ratios = [0.8, 0.95, 1.0, 1.02, 1.1, 1.3, 0.9]
    assert paired.bootstrap_median(ratios) == paired.bootstrap_median(ratios)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.90, 1.04, "met"), (0.98, 1.08, "not resolved"), (1.06, 1.20, "missed")],
)
def test_a_cpu_target_is_met_only_when_the_whole_interval_is_under_it(low, high, expected):
    figure = {"low": low, "high": high}
    assert paired.verdict(figure, "cpu_ms_per_request", paired.MIN_PAIRS) == expected


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(1.00, 1.10, "met"), (0.97, 1.05, "not resolved"), (0.80, 0.99, "missed")],
)
def test_a_throughput_target_is_met_only_when_the_whole_interval_is_over_it(low, high, expected):
    assert paired.verdict({"low": low, "high": high}, "output_tok_s", paired.MIN_PAIRS) == expected


def test_a_handful_of_pairs_gets_no_verdict():
    figure = {"low": 0.90, "high": 0.95}
    assert "pairs" in paired.verdict(figure, "cpu_ms_per_request", paired.MIN_PAIRS - 1)


def test_a_thread_that_comes_or_goes_voids_the_reading():
    assert paired.cpu_between({1: 5, 2: 10}, {1: 1_000_000_005, 2: 10}) == pytest.approx(1.0)
    assert paired.cpu_between({1: 5}, {1: 7, 2: 3}) is None
    assert paired.cpu_between({1: 5, 2: 3}, {1: 7}) is None


def test_thread_times_reads_every_thread_of_a_process():
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        times = paired.thread_times(os.getpid())
        assert threading.get_native_id() in times and worker.native_id in times
        assert all(ns >= 0 for ns in times.values())
    finally:
        stop.set()
        worker.join()


def test_the_report_names_each_workload_and_its_verdict():
    def blocks(values: list[float]) -> list[dict[str, float]]:
        return [{"cpu_ms_per_request": v, "output_tok_s": 1000 / v} for v in values]

    result = {
        "baseline": "vllm",
        "seconds": 600.0,
        "workloads": [
            {
                "name": "c=1, kept-alive",
                "concurrency": 1,
                "max_tokens": 64,
                "requests": 4,
                "pairs": 10,
            },
            {"name": "c=16", "concurrency": 16, "max_tokens": 128, "requests": 32, "pairs": 10},
        ],
        "blocks": {
            "c=1, kept-alive": {
                "A": blocks([30 + i for i in range(10)]),
                "B": blocks([33 + 1.1 * i for i in range(10)]),
            },
            "c=16": {"A": blocks([20.0] * 10), "B": blocks([10.0] * 10)},
        },
    }
    text = paired.report(result)
    assert "| c=1, kept-alive: 10 pairs of 4 x 64 tokens | HTTP CPU per request |" in text
    assert "<= 1.05: met" in text  # c=1: A about 9 % under B in every pair
    assert text.count("output tok/s") == 1  # not at concurrency 1
    assert "<= 1.05: missed" in text and ">= 1.00: missed" in text  # c=16: A twice B's CPU


def test_against_itself_the_report_asks_whether_the_interval_holds_one():
    same = [{"cpu_ms_per_request": 20.0 + i, "output_tok_s": 900.0 + i} for i in range(10)]
    off = [{"cpu_ms_per_request": 30.0 + i, "output_tok_s": 900.0 + i} for i in range(10)]
    result = {
        "baseline": "nimctl",
        "seconds": 60.0,
        "workloads": [
            {"name": "c=16", "concurrency": 16, "max_tokens": 128, "requests": 32, "pairs": 10}
        ],
        "blocks": {"c=16": {"A": off, "B": same}},
    }
    text = paired.report(result)
    assert "| interval holds 1.00 |" in text and "target" not in text
    cpu, tokens = (line for line in text.splitlines() if line.startswith("| c=16"))
    assert cpu.endswith("| no |") and tokens.endswith("| yes |")
