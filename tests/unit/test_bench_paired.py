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


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(-1.0, 1.5, "met"), (1.0, 3.0, "not resolved"), (2.5, 4.0, "missed")],
)
def test_a_ttft_target_is_a_difference_of_two_milliseconds(low, high, expected):
    assert paired.verdict({"low": low, "high": high}, "ttft_ms", paired.MIN_PAIRS) == expected


def test_ttft_is_compared_as_a_difference_pair_by_pair():
    b = [10.0, 40.0, 12.0, 30.0, 14.0]
    a = [x + 1.5 for x in b]  # 1.5 ms later in every pair, whatever B's drift
    figure = paired.compare(a, b, difference=True)
    assert figure["ratio"] == pytest.approx(1.5)
    assert figure["low"] == pytest.approx(1.5) and figure["high"] == pytest.approx(1.5)
    assert figure["pooled"] == pytest.approx(1.5)


def test_the_probe_p99_pools_each_sides_samples():
    # One slow sample in one of A's twenty blocks: under 1 % of A's samples, so A's p99 stays
    # with B's; in five of them (5 %) it is A's p99.
    b = [[1.0] * 50 for _ in range(20)]
    once = [[1.0] * 50 for _ in range(20)]
    once[3][7] = 9.0
    figure = paired.compare_p99(once, b)
    assert figure["ratio"] == pytest.approx(1.0) and figure["high"] >= 1.0
    often = [[1.0] * 45 + [9.0] * 5 for _ in range(20)]
    figure = paired.compare_p99(often, b)
    assert figure["ratio"] == pytest.approx(9.0) and figure["low"] == pytest.approx(9.0)
    assert paired.verdict(figure, "probe_p99_ms", 20) == "missed"


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
    assert "| interval holds no difference |" in text and "target" not in text
    cpu, tokens = (line for line in text.splitlines() if line.startswith("| c=16"))
    assert cpu.endswith("| no |") and tokens.endswith("| yes |")


def test_the_report_has_a_row_for_every_target_of_the_issue():
    def chat(cpu: float, ttft: float, tokens: float = 900.0) -> dict[str, float]:
        return {"cpu_ms_per_request": cpu, "output_tok_s": tokens, "ttft_ms": ttft}

    def images(rate: float) -> dict[str, float]:
        return {"cpu_ms_per_request": 150.0, "requests_per_s": rate}

    workloads = [w for w in paired.WORKLOADS if w.name in ("c=1, kept-alive", "5 images, c=4")]
    probe = next(w for w in paired.WORKLOADS if w.kind == "probe")
    result = {
        "baseline": "vllm",
        "seconds": 900.0,
        "workloads": [{**vars(w), "pairs": 12} for w in (*workloads, probe)],
        "blocks": {
            "c=1, kept-alive": {
                "A": [chat(30.0, 12.0 + i, 900.0 + 30 * (-1) ** i) for i in range(12)],
                "B": [chat(33.0, 12.5 + i) for i in range(12)],
            },
            "5 images, c=4": {
                "A": [images(5.0) for _ in range(12)],
                "B": [images(4.0) for _ in range(12)],
            },
            probe.name: {
                "A": [{"probe_ms": [2.0] * 40} for _ in range(12)],
                "B": [{"probe_ms": [3.0] * 40} for _ in range(12)],
            },
        },
    }
    rows = {
        tuple(cell.strip() for cell in line.split("|")[1:3]): line
        for line in paired.report(result).splitlines()
        if line.startswith("| c=") or line.startswith("| 5 images")
    }
    ttft = rows[("c=1, kept-alive: 12 pairs of 4 x 64 tokens", "TTFT p50")]
    assert "| -0.50 |" in ttft and ttft.endswith("| <= B + 2 ms: met |")
    assert rows[("c=1, kept-alive: 12 pairs of 4 x 64 tokens", "output tok/s")].endswith(
        "| >= 1.00: not resolved |"  # 3 % above in half the pairs, under in the other half
    )
    rate = rows[("5 images, c=4: 12 pairs of 8 requests", "requests/s")]
    assert "| 1.250 |" in rate and rate.endswith("| >= 1.00: met |")
    health = rows[(f"{probe.name}: 12 pairs of {probe.requests} x 128 tokens", "health probe p99")]
    assert "p99 2.0 ms" in health and health.endswith("| <= 1.00: met |")
