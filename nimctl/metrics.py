"""Prometheus metrics: vLLM's `vllm:` series, NIM's names derived from them, and nimctl's own.

NVIDIA's autoscaling examples and dashboards query NIM's unprefixed names
(`num_requests_running`, `time_to_first_token_seconds`, ...). They are computed at scrape time
from vLLM's series, in the same pass that exports those, so the two can never disagree and no
second set of counters is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.samples import Sample

from nimctl.errors import Refusal
from nimctl.media.report import MediaReport
from nimctl.startup import Phase, Status

# NIM name -> the vLLM family it is (vLLM family names carry no _total suffix).
NIM_ALIASES = {
    "num_requests_running": "vllm:num_requests_running",
    "num_requests_waiting": "vllm:num_requests_waiting",
    "gpu_cache_usage_perc": "vllm:kv_cache_usage_perc",
    "prompt_tokens": "vllm:prompt_tokens",
    "generation_tokens": "vllm:generation_tokens",
    "time_to_first_token_seconds": "vllm:time_to_first_token_seconds",
    "time_per_output_token_seconds": "vllm:request_time_per_output_token_seconds",
    "e2e_request_latency_seconds": "vllm:e2e_request_latency_seconds",
    "request_prompt_tokens": "vllm:request_prompt_tokens",
    "request_generation_tokens": "vllm:request_generation_tokens",
}
# vLLM counts every finished request by reason in vllm:request_success; NIM splits them.
FINISHED = "vllm:request_success"
SUCCESS_REASONS = ("stop", "length")
STATES = ("starting", "ready", "draining", "failed", "stopping")
# From timer jitter (~1 ms) to stalls that fail a probe (seconds).
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Media: a same-cluster fetch (ms) to a slow origin near the fetch timeout; a small JPEG's
# decode (sub-ms) to a big video's probe; sizes in powers of 4 (a thumbnail to the caps).
FETCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DECODE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BYTES_BUCKETS = tuple(float(4**k * 1024) for k in range(1, 11))  # 4 KiB .. 1 GiB
PIXELS_BUCKETS = tuple(float(4**k * 1024) for k in range(1, 10))  # 64x64 .. 16k x 16k
FRAMES_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
ITEMS_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
# Prompt tokens of a request's media: a small thumbnail (tens) to many high-resolution images or
# a long video (tens of thousands), in steps of about 2x.
TOKENS_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
MEDIA_KINDS = ("image", "video")


class NimctlMetrics:
    """nimctl's own series, in a registry of their own (no process-global state)."""

    def __init__(
        self,
        lifecycle: Callable[[], tuple[str, float | None]],
        info: dict[str, str],
    ) -> None:
        self.registry = CollectorRegistry()
        self.refused = Counter(
            "nimctl_requests_refused",
            "Requests refused before the engine, by rule or reason.",
            ["rule"],
            registry=self.registry,
        )
        self.requests_rejected = Counter(
            "nimctl_requests_rejected",
            "Requests answered 429 by admission control, by the limit reached "
            "(max_queued_requests, max_queued_tokens).",
            ["reason"],
            registry=self.registry,
        )
        self.media_failures = Counter(
            "nimctl_media_failures",
            "Media parts that could not be used, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "nimctl_http_requests",
            "HTTP requests answered, by route, method, status and API key name (empty for a "
            "key without a name, or none).",
            ["route", "method", "status", "key"],
            registry=self.registry,
        )
        # By `model`: the served model or a LoRA adapter (vLLM's `vllm:` series are by base
        # model only). Only names that passed require_model become labels: bounded.
        self.chat_requests = Counter(
            "nimctl_chat_requests",
            "Chat requests accepted for a served model or LoRA adapter, before the guards.",
            ["model_name"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "nimctl_http_request_duration_seconds",
            "Time from request to the end of the response (streams included), by route.",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        # Sampled by nimctl.looplag.LoopLagMonitor: how late the event loop wakes a sleeping
        # task, i.e. how long something held the loop that every request shares.
        self.loop_lag = Histogram(
            "nimctl_event_loop_lag_seconds",
            "How late the event loop woke a task sleeping a fixed interval (loop blocked).",
            registry=self.registry,
            buckets=LOOP_LAG_BUCKETS,
        )
        self.media = MediaMetrics(self.registry)
        self.registry.register(_LifecycleCollector(lifecycle, info))

    def count_refusal(self, refusal: Refusal) -> None:
        """A request refused before the engine: by its rule, or by its media reason."""
        counter = self.media_failures if refusal.kind == "media" else self.refused
        counter.labels(refusal.reason).inc()


class MediaMetrics:
    """What the media intake costs and carries: the part of TTFT no engine metric shows.

    Per item: fetch time (URLs only) and decode time, by kind. Per request: bytes, items,
    image pixels and video frames, observed from the intake's report; and, once the engine has
    rendered the prompt, the prompt tokens each kind became. About 1 us per observation; nothing
    at all for a request without media.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.fetch_seconds = Histogram(
            "nimctl_media_fetch_seconds",
            "Time to fetch one media item from its URL (data: URLs are not fetched), by kind.",
            ["kind"],
            registry=registry,
            buckets=FETCH_BUCKETS,
        )
        self.decode_seconds = Histogram(
            "nimctl_media_decode_seconds",
            "Time to decode and check one media item (base64, image decode, video probe) on a "
            "worker thread, by kind.",
            ["kind"],
            registry=registry,
            buckets=DECODE_BUCKETS,
        )
        self.request_bytes = Histogram(
            "nimctl_media_request_bytes",
            "Media bytes per request (decoded, before any re-encoding), by kind.",
            ["kind"],
            registry=registry,
            buckets=BYTES_BUCKETS,
        )
        self.request_items = Histogram(
            "nimctl_media_request_items",
            "Media items per request, by kind.",
            ["kind"],
            registry=registry,
            buckets=ITEMS_BUCKETS,
        )
        self.request_pixels = Histogram(
            "nimctl_media_request_image_pixels",
            "Image pixels (width x height, summed over the images) per request.",
            registry=registry,
            buckets=PIXELS_BUCKETS,
        )
        self.request_frames = Histogram(
            "nimctl_media_request_video_frames",
            "Video frames (in the files, summed over the videos) per request.",
            registry=registry,
            buckets=FRAMES_BUCKETS,
        )
        self.request_tokens = Histogram(
            "nimctl_media_request_tokens",
            "Prompt tokens the media of one request became (its placeholders, as the engine "
            "rendered them, summed over the items), by kind.",
            ["kind"],
            registry=registry,
            buckets=TOKENS_BUCKETS,
        )

        # Children bound once: labels() costs as much again as the observation itself.
        self._by_kind = {
            kind: (
                self.fetch_seconds.labels(kind),
                self.decode_seconds.labels(kind),
                self.request_bytes.labels(kind),
                self.request_items.labels(kind),
            )
            for kind in MEDIA_KINDS
        }
        self._tokens_by_kind = {kind: self.request_tokens.labels(kind) for kind in MEDIA_KINDS}

    def observe_tokens(self, tokens: Mapping[str, int]) -> None:
        """kind -> prompt tokens, from the engine (`ChatResult.media_tokens`). A modality other
        than image or video (a model's own name for one) is labelled as the engine names it:
        bounded by the model's modalities."""
        for kind, count in tokens.items():
            child = self._tokens_by_kind.get(kind)
            if child is None:
                child = self.request_tokens.labels(kind)
            child.observe(count)

    def observe(self, report: MediaReport) -> None:
        totals: dict[str, list[int]] = {}  # kind -> [bytes, items, pixels, frames]
        for item in report.items:
            fetch, decode, _, _ = self._by_kind[item.kind]
            if item.fetched:
                fetch.observe(item.fetch_seconds)
            decode.observe(item.decode_seconds)
            total = totals.setdefault(item.kind, [0, 0, 0, 0])
            total[0] += item.bytes
            total[1] += 1
            total[2] += item.pixels
            total[3] += item.frames
        for kind, (size, items, pixels, frames) in totals.items():
            _, _, request_bytes, request_items = self._by_kind[kind]
            request_bytes.observe(size)
            request_items.observe(items)
            if kind == "image":
                self.request_pixels.observe(pixels)
            else:
                self.request_frames.observe(frames)


class _LifecycleCollector:
    def __init__(
        self,
        lifecycle: Callable[[], tuple[str, float | None]],
        info: dict[str, str],
    ) -> None:
        self._lifecycle = lifecycle
        self._info = info

    def collect(self) -> Iterator[Metric]:
        state, seconds_to_ready = self._lifecycle()
        ready = GaugeMetricFamily("nimctl_ready", "1 while the engine can serve requests.")
        ready.add_metric([], 1.0 if state == "ready" else 0.0)
        yield ready
        states = GaugeMetricFamily(
            "nimctl_state", "The server's lifecycle state (1 = current).", labels=["state"]
        )
        for name in STATES:
            states.add_metric([name], 1.0 if name == state else 0.0)
        yield states
        if seconds_to_ready is not None:
            took = GaugeMetricFamily(
                "nimctl_seconds_to_ready", "Seconds from process start to the engine being ready."
            )
            took.add_metric([], seconds_to_ready)
            yield took
        info = GaugeMetricFamily(
            "nimctl_build_info", "nimctl version and the served profile.", labels=list(self._info)
        )
        info.add_metric(list(self._info.values()), 1.0)
        yield info


# --- start-up progress ----------------------------------------------------------------------


class StartupCollector:
    """`nimctl_startup_phase{phase}` (1 = current, like nimctl_state) and
    `nimctl_startup_progress` (the fraction of that phase; absent while it cannot be measured),
    read from the same status as the readiness message at each scrape."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        phases = GaugeMetricFamily(
            "nimctl_startup_phase",
            "The start-up phase the server is in, or ended in (1 = current).",
            labels=["phase"],
        )
        for phase in Phase:
            phases.add_metric([phase.value], 1.0 if phase is status.phase else 0.0)
        yield phases
        if status.fraction is not None:
            fraction = GaugeMetricFamily(
                "nimctl_startup_progress",
                "How far through the current start-up phase, 0-1 (absent when not measurable).",
            )
            fraction.add_metric([], status.fraction)
            yield fraction


def nim_families(families: Iterable[Metric]) -> Iterator[Metric]:
    """NIM's metric names from vLLM's families."""
    by_name = {family.name: family for family in families}
    for alias, source in NIM_ALIASES.items():
        family = by_name.get(source)
        if family is not None:
            yield _renamed(family, source, alias)
    finished = by_name.get(FINISHED)
    if finished is not None:
        yield from _finish_counters(finished)


def _renamed(family: Metric, source: str, alias: str) -> Metric:
    copy = Metric(alias, family.documentation, family.type, family.unit)
    copy.samples = [
        Sample(alias + s.name[len(source) :], s.labels, s.value, s.timestamp, s.exemplar)
        for s in family.samples
        if not s.name.endswith("_created")
    ]
    return copy


def _finish_counters(finished: Metric) -> Iterator[Metric]:
    totals = [s for s in finished.samples if s.name.endswith("_total")]
    by_reason = CounterMetricFamily(
        "request_finish",
        "Finished requests, by finish reason.",
        labels=["model_name", "finished_reason"],
    )
    success: dict[str, float] = {}
    failure: dict[str, float] = {}
    for sample in totals:
        model = sample.labels.get("model_name", "")
        reason = sample.labels.get("finished_reason", "")
        by_reason.add_metric([model, reason], sample.value)
        bucket = success if reason in SUCCESS_REASONS else failure
        bucket[model] = bucket.get(model, 0.0) + sample.value
    yield by_reason
    for name, values, text in (
        ("request_success", success, "Requests finished by stop or length."),
        ("request_failure", failure, "Requests finished otherwise (abort, error, ...)."),
    ):
        family = CounterMetricFamily(name, text, labels=["model_name"])
        for model, value in values.items():
            family.add_metric([model], value)
        yield family


class MetricsExporter:
    """Renders one scrape: the engine's registry (vLLM's series), NIM's names, nimctl's own."""

    def __init__(self, engine_registry: CollectorRegistry, own: NimctlMetrics) -> None:
        self._engine = engine_registry
        self._own = own

    def render(self) -> bytes:
        engine = list(self._engine.collect())
        return generate_latest(
            _Families([*engine, *nim_families(engine), *self._own.registry.collect()])
        )


class _Families:
    """Anything with collect() is a registry to the exposition code."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
