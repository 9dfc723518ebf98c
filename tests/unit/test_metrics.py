"""NIM's metric names, derived from vLLM's series in the same scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from nimctl.metrics import MetricsExporter, NimctlMetrics

LABELS = ["model_name", "engine"]


def vllm_registry() -> CollectorRegistry:
    """The shapes vLLM 0.32's stat logger registers (names, types, labels)."""
    registry = CollectorRegistry()
    Gauge("vllm:num_requests_running", "r", LABELS, registry=registry).labels("m", "0").set(3)
    Gauge("vllm:num_requests_waiting", "w", LABELS, registry=registry).labels("m", "0").set(2)
    Gauge("vllm:kv_cache_usage_perc", "k", LABELS, registry=registry).labels("m", "0").set(0.25)
    Counter("vllm:prompt_tokens", "p", LABELS, registry=registry).labels("m", "0").inc(100)
    Counter("vllm:generation_tokens", "g", LABELS, registry=registry).labels("m", "0").inc(40)
    ttft = Histogram(
        "vllm:time_to_first_token_seconds", "t", LABELS, registry=registry, buckets=(0.1, 1.0)
    )
    ttft.labels("m", "0").observe(0.05)
    ttft.labels("m", "0").observe(0.5)
    Histogram(
        "vllm:request_time_per_output_token_seconds", "tpot", LABELS, registry=registry
    ).labels("m", "0").observe(0.01)
    Histogram("vllm:e2e_request_latency_seconds", "e", LABELS, registry=registry).labels(
        "m", "0"
    ).observe(1.0)
    Histogram("vllm:request_prompt_tokens", "rp", LABELS, registry=registry).labels(
        "m", "0"
    ).observe(50)
    Histogram("vllm:request_generation_tokens", "rg", LABELS, registry=registry).labels(
        "m", "0"
    ).observe(20)
    finished = Counter("vllm:request_success", "f", [*LABELS, "finished_reason"], registry=registry)
    for reason, count in (("stop", 4), ("length", 2), ("abort", 1), ("error", 1)):
        finished.labels("m", "0", reason).inc(count)
    return registry


def scrape(state: str = "ready", seconds: float | None = 21.5) -> dict[str, float]:
    own = NimctlMetrics(
        lambda: (state, seconds),
        {"version": "0", "profile": "tiny", "profile_id": "abc", "model": "m"},
    )
    own.refused.labels("strict_alternation").inc()
    text = MetricsExporter(vllm_registry(), own).render().decode()
    return {
        s.name
        + "".join(f"[{k}={v}]" for k, v in sorted(s.labels.items()) if k != "engine"): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_nim_names_carry_the_engine_values():
    values = scrape()
    assert values["num_requests_running[model_name=m]"] == 3
    assert values["num_requests_waiting[model_name=m]"] == 2
    assert values["gpu_cache_usage_perc[model_name=m]"] == 0.25
    assert values["prompt_tokens_total[model_name=m]"] == 100
    assert values["generation_tokens_total[model_name=m]"] == 40
    assert values["time_to_first_token_seconds_count[model_name=m]"] == 2
    assert values["time_to_first_token_seconds_bucket[le=0.1][model_name=m]"] == 1
    assert values["time_per_output_token_seconds_count[model_name=m]"] == 1
    assert values["e2e_request_latency_seconds_sum[model_name=m]"] == 1.0
    assert values["request_prompt_tokens_sum[model_name=m]"] == 50
    assert values["request_generation_tokens_sum[model_name=m]"] == 20
    # vLLM's originals stay.
    assert values["vllm:num_requests_running[model_name=m]"] == 3


def test_finish_reasons_split_into_success_and_failure():
    values = scrape()
    assert values["request_success_total[model_name=m]"] == 6
    assert values["request_failure_total[model_name=m]"] == 2
    assert values["request_finish_total[finished_reason=abort][model_name=m]"] == 1
    assert values["request_finish_total[finished_reason=stop][model_name=m]"] == 4


def test_nimctl_series():
    values = scrape()
    assert values["nimctl_ready"] == 1
    assert values["nimctl_state[state=ready]"] == 1 and values["nimctl_state[state=starting]"] == 0
    assert values["nimctl_seconds_to_ready"] == 21.5
    assert values["nimctl_requests_refused_total[rule=strict_alternation]"] == 1
    assert values["nimctl_build_info[model=m][profile=tiny][profile_id=abc][version=0]"] == 1
    starting = scrape("starting", None)
    assert starting["nimctl_ready"] == 0 and "nimctl_seconds_to_ready" not in starting


def test_media_metrics_from_a_report():
    from nimctl.media.report import MediaItemReport, MediaReport

    own = NimctlMetrics(lambda: ("ready", 1.0), {"version": "0"})
    ms = 1_000_000
    report = MediaReport(
        [
            MediaItemReport("a", "image", True, 0, 30 * ms, 30 * ms, 32 * ms, 5000, 1200),
            MediaItemReport("b", "image", False, 0, 0, 0, 4 * ms, 100, 300),
            MediaItemReport("c", "video", True, 0, 200 * ms, 200 * ms, 300 * ms, 9000, 0, 25),
        ]
    )
    own.media.observe(report)
    text = MetricsExporter(CollectorRegistry(), own).render().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    # Fetch time only for fetched items; decode time for every item.
    assert value("nimctl_media_fetch_seconds_count", kind="image") == 1
    assert value("nimctl_media_fetch_seconds_sum", kind="image") == 0.03
    assert value("nimctl_media_fetch_seconds_sum", kind="video") == 0.2
    assert value("nimctl_media_decode_seconds_count", kind="image") == 2
    assert abs(value("nimctl_media_decode_seconds_sum", kind="image") - 0.006) < 1e-9
    # Per request: one observation per kind, of the request's totals.
    assert value("nimctl_media_request_bytes_count", kind="image") == 1
    assert value("nimctl_media_request_bytes_sum", kind="image") == 5100
    assert value("nimctl_media_request_items_sum", kind="image") == 2
    assert value("nimctl_media_request_items_sum", kind="video") == 1
    assert value("nimctl_media_request_image_pixels_sum") == 1500
    assert value("nimctl_media_request_video_frames_sum") == 25
    assert value("nimctl_media_request_video_frames_count") == 1
