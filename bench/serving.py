"""Serving benchmark: nimctl (A) against vLLM's own OpenAI server (B) and the bare engine (C).

A and B serve the same generated tiny model with the same engine arguments (the `tiny`
profile's). They take turns in rounds, A B then B A (so that neither always goes first and a
drift of the machine within a round favours neither), each alone on the machine for its turn,
and every comparison is a median of per-round ratios, so that noise hits both. Per turn:

1. **Keep-alive, concurrency 1**: sequential streamed chats (64 tokens, ignore_eos, greedy) on
   ONE kept-alive connection, then `GET /v1/models` on it. Nothing else moves, so a fixed
   per-request cost shows as it is: this is the figure that sees a 40 ms delayed-ACK stall,
   which throughput runs at concurrency 8-32 on 2 cores hide in their burst-to-burst swings.
   Timed by a raw-socket client (bench.rawhttp): time to response head, to first body byte
   and to the first event with content (TTFT).
2. **HTTP CPU per request**: utime+stime of the server's HTTP process only (/proc/PID/stat;
   engine core and worker excluded), read before and after each measured run, divided by the
   requests it served. The same work goes to the engine under either server, so this is the
   frontend's own cost, the one that decides how many requests one replica's HTTP process takes.
3. **Throughput**: vLLM's own `bench serve` (as a library), streaming, 128 in / 128 out,
   ignore_eos, at each concurrency.
4. **Five 1-megapixel PNGs** (random noise, so they do not compress), base64, `max_tokens` 8,
   at concurrency 1 and 4: requests/s and HTTP CPU per request.

`--quick` (`make bench-quick`): concurrency 1 and 16, 3 rounds, fewer prompts, no images, and
both servers started once and paused (SIGSTOP of the whole process group) while the other runs.
The full run (`make bench`) starts each server afresh for every turn (so start-up and memory are
measured too), runs 5 rounds at 1, 16 and 32, the image request, /health latency under load and
the bare engine (C, AsyncLLM in-process with the same load shape).

`--baseline nimctl` runs a second nimctl as B: the same server against itself, so every ratio
should be 1.00 and the spread of its per-round ratios is the noise floor of this machine, the
smallest A/B difference the run can tell from noise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

from bench.rawhttp import Connection, chat_body, closed_loop, encode_request
from bench.servers import CACHE, MODEL, PYTHON, REPO, Running, start_nimctl, start_vllm
from nimctl.modelgen.idefics3 import ensure_tiny_model
from nimctl.profiles import ProfileStore, builtin_profiles_dir

INPUT_LEN = 128
OUTPUT_LEN = 128
KEEPALIVE_TOKENS = 64
IMAGE_COUNT = 5
IMAGE_MAX_TOKENS = 8
NAMES = ("nimctl", "vllm")
LABELS = {"nimctl": "A nimctl", "vllm": "B vLLM", "engine": "C engine"}
METRICS = (
    "output_throughput",
    "request_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_itl_ms",
    "p99_itl_ms",
)
# A fixed prompt for the keep-alive requests (about 130 tokens with the tiny tokenizer).
KEEPALIVE_PROMPT = (
    "You are looking at a quiet harbour early in the morning. Describe the boats, the water, "
    "the light on the houses along the quay, the gulls over the fish market and the first "
    "people who arrive for work, in plain sentences, one detail after the other."
)


@dataclass(frozen=True)
class Plan:
    quick: bool
    rounds: int
    concurrencies: tuple[int, ...]
    keepalive_requests: int
    models_requests: int
    image_runs: tuple[tuple[int, int], ...]  # (concurrency, requests)
    probe: bool
    engine_direct: bool
    fresh_servers: bool
    nimctl_env: tuple[tuple[str, str], ...] = ()  # e.g. UVICORN_LOOP=asyncio, to compare
    baseline: str = "vllm"  # B: vLLM's server, or "nimctl" (A against itself: the noise floor)
    counterbalanced: bool = True  # rounds A B, B A, ...; runs saved before it: always A B

    @property
    def section(self) -> str:
        """Its section of docs/benchmarks.md (a key of SECTION_TITLES)."""
        if self.baseline == "nimctl":
            return "serving-noise"
        return "serving-quick" if self.quick else "serving"

    def prompts_for(self, concurrency: int) -> int:
        return max(8, 2 * concurrency) if self.quick else max(16, 4 * concurrency)

    def probe_prompts_for(self, concurrency: int) -> int:
        """Long enough for ~250 probes a round (one every 50 ms): a p99 of the ~60 that the
        load run gives is its worst sample or next to it, and swung by 10 ms between A/A runs."""
        return 8 * concurrency


SECTION_TITLES = {
    "serving": "Serving: nimctl against vLLM's server, side by side",
    "serving-quick": "Serving, quick look (`make bench-quick`)",
    "serving-noise": "Serving, noise floor: nimctl against itself",
}


def order(plan: Plan, round_: int) -> tuple[str, ...]:
    """A B, then B A: counterbalanced, so that going first or second favours neither."""
    return NAMES[::-1] if plan.counterbalanced and round_ % 2 else NAMES


def plan_for(quick: bool, rounds: int | None, env: tuple[tuple[str, str], ...] = ()) -> Plan:
    if quick:
        return Plan(True, rounds or 3, (1, 16), 20, 30, (), False, False, False, env)
    return Plan(False, rounds or 5, (1, 16, 32), 60, 100, ((1, 8), (4, 16)), True, True, True, env)


# --- load generators ------------------------------------------------------------------------


class BenchFailed(RuntimeError):
    pass


def vllm_bench(
    base_url: str,
    tokenizer: Path,
    concurrency: int,
    prompts: int,
    seed: int,
    output_len: int = OUTPUT_LEN,
) -> dict[str, float]:
    """One run of vLLM's `bench serve` against an OpenAI-compatible chat endpoint."""
    import vllm.benchmarks.serve as serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    async def no_metrics(*_: object, **__: object) -> None:
        return None

    # It scrapes /metrics before and after each run (for speculative decoding and diffusion
    # figures this model has not): requests the HTTP CPU per request must not count.
    serve.fetch_spec_decode_metrics = no_metrics  # type: ignore[assignment]
    serve.fetch_diffusion_metrics = no_metrics  # type: ignore[assignment]
    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    args = parser.parse_args(
        [
            "--backend",
            "openai-chat",
            "--base-url",
            base_url,
            "--endpoint",
            "/v1/chat/completions",
            "--model",
            MODEL,
            "--tokenizer",
            str(tokenizer),
            "--dataset-name",
            "random",
            "--random-input-len",
            str(INPUT_LEN),
            "--random-output-len",
            str(output_len),
            "--ignore-eos",
            "--num-prompts",
            str(prompts),
            "--max-concurrency",
            str(concurrency),
            "--percentile-metrics",
            "ttft,tpot,itl",
            "--metric-percentiles",
            "50,99",
            "--seed",
            str(seed),
            "--ready-check-timeout-sec",
            "0",  # no extra test request: every request sent is a measured one
            "--disable-tqdm",
        ]
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # its own report; it names failures there
        result = serve.main(args)
    if result.get("failed"):
        raise BenchFailed(
            f"{result['failed']} requests failed against {base_url}:\n{printed.getvalue()[-4000:]}"
        )
    row = {metric: float(result[metric]) for metric in METRICS}
    row["completed"] = float(result["completed"])
    return row


def measured(
    server: Running,
    tokenizer: Path,
    concurrency: int,
    prompts: int,
    seed: int,
    failures: list[str],
    output_len: int = OUTPUT_LEN,
) -> dict[str, float]:
    """A run without failed requests, with the HTTP process's CPU per request.

    A failed run is noted (for the report) and repeated.
    """
    for attempt in range(4):
        cpu = server.http_cpu_seconds()
        try:
            row = vllm_bench(server.base_url, tokenizer, concurrency, prompts, seed, output_len)
        except BenchFailed as exc:
            reason = str(exc).splitlines()
            kinds = sorted({line.rsplit(": ", 1)[0] for line in reason if "Error: " in line})
            failures.append(
                f"{server.name}, concurrency {concurrency}, attempt {attempt + 1}: "
                f"{reason[0]} {', '.join(kinds)}"
            )
            continue
        row["cpu_ms_per_request"] = (server.http_cpu_seconds() - cpu) * 1000 / row["completed"]
        return row
    raise RuntimeError(f"{server.name} failed 4 runs in a row: {failures[-4:]}")


def keepalive(server: Running, requests: int, models: int) -> dict[str, float]:
    """Sequential streamed chats on one kept-alive connection, then GET /v1/models on it."""
    chat = encode_request(
        "POST",
        "/v1/chat/completions",
        server.port,
        chat_body(KEEPALIVE_PROMPT, KEEPALIVE_TOKENS, True, MODEL),
    )
    listing = encode_request("GET", "/v1/models", server.port)
    with Connection(server.port) as connection:
        for _ in range(3):  # this connection's first requests, not measured
            connection.exchange(chat, sse=True)
        cpu = server.http_cpu_seconds()
        chats = [connection.exchange(chat, sse=True) for _ in range(requests)]
        cpu = server.http_cpu_seconds() - cpu
        lists = [connection.exchange(listing) for _ in range(models)]
    for exchange in chats + lists:
        if exchange.status != 200:
            raise RuntimeError(f"{server.name}: HTTP {exchange.status}: {exchange.body[:300]!r}")
    if any(x.first_content is None for x in chats):
        raise RuntimeError(f"{server.name}: a stream carried no content")
    return {
        "ttft_ms": statistics.median(x.ms(x.first_content) for x in chats),
        "ttft_p90_ms": percentile([x.ms(x.first_content) for x in chats], 0.9),
        # The fastest request: on a busy machine, a fixed per-request stall (such as a 40 ms
        # delayed ACK) still sets a floor that no request gets under.
        "ttft_min_ms": min(x.ms(x.first_content) for x in chats),
        "head_ms": statistics.median(x.ms(x.head) for x in chats),
        "first_byte_ms": statistics.median(x.ms(x.first_body) for x in chats),
        "total_ms": statistics.median(x.ms(x.end) for x in chats),
        "models_ms": statistics.median(x.ms(x.end) for x in lists),
        "models_p90_ms": percentile([x.ms(x.end) for x in lists], 0.9),
        "cpu_ms_per_request": cpu * 1000 / requests,
    }


def noise_png(seed: int) -> bytes:
    """1000 x 1000 RGB of uniform noise: PNG cannot compress it (about 3 MB)."""
    path = CACHE / f"noise-{seed}.png"
    if not path.exists():
        pixels = np.random.default_rng(seed).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
    return path.read_bytes()


def images_body(stream: bool = False) -> bytes:
    parts: list[dict[str, object]] = [{"type": "text", "text": "Compare these images."}]
    for seed in range(IMAGE_COUNT):
        url = "data:image/png;base64," + base64.b64encode(noise_png(seed)).decode()
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return chat_body(parts, IMAGE_MAX_TOKENS, stream, MODEL)


def images_run(server: Running, body: bytes, concurrency: int, requests: int) -> dict[str, float]:
    """`requests` five-image requests over `concurrency` kept-alive connections."""
    request = encode_request("POST", "/v1/chat/completions", server.port, body)
    asyncio.run(closed_loop(server.port, [request] * concurrency, concurrency, False))  # warm
    cpu = server.http_cpu_seconds()
    done, took = asyncio.run(closed_loop(server.port, [request] * requests, concurrency, False))
    cpu = server.http_cpu_seconds() - cpu
    bad = [x for x in done if x.status != 200]
    if bad:
        raise RuntimeError(f"{server.name}: HTTP {bad[0].status}: {bad[0].body[:300]!r}")
    return {
        "requests_per_s": requests / took,
        "latency_ms": statistics.median(x.ms(x.end) for x in done),
        "cpu_ms_per_request": cpu * 1000 / requests,
    }


# --- background samplers ---------------------------------------------------------------------


class TreeMemory:
    """Peak RSS of a process and its children, sampled in the background."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs if p.is_running())
            except psutil.Error:
                continue
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**30


class ProbeLatency:
    """Latency of a probe endpoint, polled every 50 ms by `bench.probe` while load runs."""

    def __init__(self, url: str) -> None:
        self._process = subprocess.Popen(
            [str(PYTHON), "-m", "bench.probe", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            text=True,
        )

    def stop(self) -> list[float]:
        out, _ = self._process.communicate(input="", timeout=60)
        if self._process.returncode != 0:
            raise RuntimeError(f"the probe failed with {self._process.returncode}")
        return json.loads(out)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q + 0.5) - 1))]


def latency_summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "max_ms": max(samples) * 1000,
        "n": len(samples),
    }


def engine_direct(
    plan: Plan, model_dir: Path, engine_args: dict[str, Any], log: Path
) -> dict[int, list[dict[str, float]]]:
    config = {
        "model_dir": str(model_dir),
        "engine_args": engine_args,
        "concurrencies": list(plan.concurrencies),
        "rounds": plan.rounds,
        "input_len": INPUT_LEN,
        "output_len": OUTPUT_LEN,
        "prompts": {str(c): plan.prompts_for(c) for c in plan.concurrencies},
    }
    with log.open("w") as handle:
        out = subprocess.run(
            [str(PYTHON), "-m", "bench.engine_direct", json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=handle,
            text=True,
            cwd=REPO,
            check=True,
            timeout=1800,
        )
    rows: dict[int, list[dict[str, float]]] = {c: [] for c in plan.concurrencies}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["concurrency"]].append({m: row[m] for m in METRICS})
    return rows


# --- the run -----------------------------------------------------------------------------------


def turn(
    server: Running,
    plan: Plan,
    model_dir: Path,
    round_: int,
    body: bytes | None,
    failures: list[str],
    probes: list[float],
) -> dict[str, Any]:
    """Everything measured on one server in one round; the server is alone and ready."""
    top = max(plan.concurrencies)
    measured(server, model_dir, top, top, 0, failures, output_len=16)  # warm-up
    out: dict[str, Any] = {
        "keepalive": keepalive(server, plan.keepalive_requests, plan.models_requests)
    }
    out["load"] = {
        c: measured(server, model_dir, c, plan.prompts_for(c), round_ + 1, failures)
        for c in plan.concurrencies
    }
    if plan.probe:
        probe = ProbeLatency(server.base_url + server.live_path)
        try:
            measured(server, model_dir, top, plan.probe_prompts_for(top), 100 + round_, failures)
        finally:
            samples = probe.stop()
            probes += samples
        out["probe"] = latency_summary(samples)
    if body is not None:
        out["images"] = {c: images_run(server, body, c, n) for c, n in plan.image_runs}
    return out


def run(plan: Plan) -> dict[str, Any]:
    model_dir = ensure_tiny_model(CACHE)
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    engine_args = dict(profile.engine_args)
    body = images_body() if plan.image_runs else None
    # Kept after the run: the servers' logs explain a failed request.
    logdir = CACHE / "logs" / time.strftime("%Y%m%dT%H%M%S")
    logdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def start(name: str, round_: int) -> Running:
        log = logdir / f"{name}-{round_}.log"
        if name == "nimctl" or plan.baseline == "nimctl":
            return start_nimctl("tiny", log, dict(plan.nimctl_env))
        return start_vllm(log)

    per_round: dict[str, list[dict[str, Any]]] = {n: [] for n in NAMES}
    probes: dict[str, list[float]] = {n: [] for n in NAMES}
    startups: dict[str, list[tuple[float, float]]] = {n: [] for n in NAMES}
    peaks: dict[str, list[float]] = {n: [] for n in NAMES}
    failures: list[str] = []
    kept: dict[str, Running] = {}
    try:
        if not plan.fresh_servers:
            # Started once, one after the other, each paused while the other works: a paused
            # server's processes take no CPU, so each still runs alone.
            for name in NAMES:
                kept[name] = start(name, 0)
                kept[name].pause()
        for round_ in range(plan.rounds):
            for name in order(plan, round_):
                if plan.fresh_servers:
                    server = start(name, round_)
                else:
                    server = kept[name]
                    server.resume()
                assert server.seconds_to_live is not None and server.seconds_to_ready is not None
                startups[name].append((server.seconds_to_live, server.seconds_to_ready))
                memory = TreeMemory(server.process.pid)
                try:
                    per_round[name].append(
                        turn(server, plan, model_dir, round_, body, failures, probes[name])
                    )
                finally:
                    peaks[name].append(memory.stop())
                    if plan.fresh_servers:
                        server.stop()
                    else:
                        server.pause()
                print(
                    f"round {round_ + 1}/{plan.rounds} {name}: {summary_line(per_round[name][-1])}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for server in kept.values():
            server.stop()
    result: dict[str, Any] = {
        "plan": asdict(plan),
        "input_len": INPUT_LEN,
        "output_len": OUTPUT_LEN,
        "keepalive_tokens": KEEPALIVE_TOKENS,
        "per_round": per_round,
        "failures": failures,
        "startup": {
            n: {
                "live_s": statistics.median(live for live, _ in startups[n]),
                "ready_s": statistics.median(ready for _, ready in startups[n]),
            }
            for n in NAMES
        },
        "peak_rss_gib": {n: statistics.median(peaks[n]) for n in NAMES},
    }
    if plan.probe:
        result["probe_under_load"] = {k: latency_summary(v) for k, v in probes.items()}
    if plan.engine_direct:
        direct = engine_direct(plan, model_dir, engine_args, logdir / "engine.log")
        result["engine"] = {c: median_of(rows, METRICS) for c, rows in direct.items()}
    result["seconds"] = time.monotonic() - began
    # Counted once per start: a paused server's turns repeat its single start in `startups`.
    started = startups if plan.fresh_servers else {n: v[:1] for n, v in startups.items()}
    result["startup_total_s"] = sum(ready for v in started.values() for _, ready in v)
    return summarize(result)


def summary_line(row: dict[str, Any]) -> str:
    k = row["keepalive"]
    parts = [
        f"keep-alive TTFT {k['ttft_ms']:.1f} ms, /v1/models {k['models_ms']:.2f} ms, "
        f"CPU {k['cpu_ms_per_request']:.1f} ms/req"
    ]
    for c, load in row["load"].items():
        parts.append(
            f"c={c} {load['output_throughput']:.0f} tok/s TTFT {load['median_ttft_ms']:.0f} ms "
            f"CPU {load['cpu_ms_per_request']:.1f} ms/req"
        )
    for c, img in row.get("images", {}).items():
        parts.append(
            f"images c={c} {img['requests_per_s']:.2f} req/s CPU {img['cpu_ms_per_request']:.0f}"
        )
    if "probe" in row:
        probe = row["probe"]
        parts.append(f"probe p50 {probe['median_ms']:.1f} p99 {probe['p99_ms']:.1f} ms")
    return "; ".join(parts)


def median_of(rows: list[dict[str, float]], keys: tuple[str, ...]) -> dict[str, float]:
    return {m: statistics.median(r[m] for r in rows) for m in keys}


# Every compared figure: (label, unit, getter, higher is better).
Getter = Callable[[dict[str, Any]], float]


def figures(result: dict[str, Any]) -> list[tuple[str, str, Getter, bool]]:
    plan = result["plan"]
    rows: list[tuple[str, str, Getter, bool]] = [
        ("keep-alive TTFT p50 (c=1)", "ms", lambda r: r["keepalive"]["ttft_ms"], False),
        ("keep-alive TTFT, fastest request", "ms", lambda r: r["keepalive"]["ttft_min_ms"], False),
        ("keep-alive response head p50", "ms", lambda r: r["keepalive"]["head_ms"], False),
        ("keep-alive first body byte p50", "ms", lambda r: r["keepalive"]["first_byte_ms"], False),
        ("keep-alive whole stream p50", "ms", lambda r: r["keepalive"]["total_ms"], False),
        ("keep-alive GET /v1/models p50", "ms", lambda r: r["keepalive"]["models_ms"], False),
        (
            "HTTP CPU per request, keep-alive",
            "ms",
            lambda r: r["keepalive"]["cpu_ms_per_request"],
            False,
        ),
    ]
    per_load = [
        ("output tok/s", "tok/s", "output_throughput", True),
        ("TTFT p50", "ms", "median_ttft_ms", False),
        ("HTTP CPU per request", "ms", "cpu_ms_per_request", False),
    ]
    per_images = [
        ("5 images: requests/s", "req/s", "requests_per_s", True),
        ("5 images: latency p50", "ms", "latency_ms", False),
        ("5 images: HTTP CPU per request", "ms", "cpu_ms_per_request", False),
    ]
    runs = [("load", c, per_load) for c in plan["concurrencies"]]
    runs += [("images", c, per_images) for c, _ in plan["image_runs"]]
    if probed_per_round(result):
        top = max(plan["concurrencies"])
        rows += [
            (f"probe {label} while {top} streams run", "ms", lambda r, k=key: r["probe"][k], False)
            for label, key in (("p50", "median_ms"), ("p99", "p99_ms"))
        ]
    for part, c, measures in runs:
        rows += [
            (
                f"{label}, c={c}",
                unit,
                lambda r, part=part, c=c, field=field: r[part][_key(r[part], c)][field],
                higher,
            )
            for label, unit, field, higher in measures
        ]
    return rows


def probed_per_round(result: dict[str, Any]) -> bool:
    """Whether every round has its own probe figures (runs saved before 12-02: pooled only)."""
    rounds = [r for rows in result["per_round"].values() for r in rows]
    return bool(result["plan"]["probe"]) and all("probe" in r for r in rounds)


def _key(rows: dict[Any, Any], c: int) -> Any:
    """Concurrency keys are ints in a fresh run and strings in one read back from JSON."""
    return c if c in rows else str(c)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Medians per server and the median of the per-round ratios A/B, for every figure."""
    table = []
    for label, unit, get, higher in figures(result):
        a = [get(r) for r in result["per_round"]["nimctl"]]
        b = [get(r) for r in result["per_round"]["vllm"]]
        ratios = [x / y if y else float("nan") for x, y in zip(a, b, strict=True)]
        table.append(
            {
                "figure": label,
                "unit": unit,
                "higher_is_better": higher,
                "nimctl": a,
                "vllm": b,
                "nimctl_median": statistics.median(a),
                "vllm_median": statistics.median(b),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "diff_median": statistics.median(x - y for x, y in zip(a, b, strict=True)),
            }
        )
    result["table"] = table
    return result


# --- the report ----------------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if unit == "tok/s":
        return f"{value:.0f}"
    if unit == "req/s":
        return f"{value:.2f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def report(result: dict[str, Any]) -> str:
    plan = result["plan"]
    if "startup_total_s" not in result and not plan["fresh_servers"]:  # runs saved before
        result["startup_total_s"] = sum(v["ready_s"] for v in result["startup"].values())
    command = "make bench-quick" if plan["quick"] else "make bench"
    module = "python -m bench.serving" + (" --quick" if plan["quick"] else "")
    how = (
        "both servers started once, each paused (SIGSTOP of its process group) while the other runs"
        if not plan["fresh_servers"]
        else "each server started afresh for its turn and stopped after it"
    )
    noise = plan.get("baseline", "vllm") == "nimctl"
    invocation = f"`{command}` (this part: `{module}`)"
    if noise:
        invocation = f"`{module} --baseline nimctl`"
    turns = (
        "A then B in odd rounds, B then A in even ones"
        if plan.get("counterbalanced")
        else "A then B in each"
    )
    b_name = "second nimctl (B)" if noise else "vLLM server (B)"
    b_what = (
        "a second `nimctl serve --profile tiny`, the same code and settings as A, so that every "
        "ratio below would be 1.00 on a quiet machine and its spread is the noise floor."
        if noise
        else "`python -m vllm.entrypoints.launchers.api_server.entry` with the same generated "
        "model and engine arguments (enforce_eager, max_model_len 8192, 64 MiB KV cache, "
        "max_num_seqs 64, 5 images, hermes tools)."
    )
    lines = [
        f"Command: {invocation}, {plan['rounds']} rounds, {turns}, "
        f"{how}, so that each runs alone and machine noise hits both; took "
        f"{result['seconds'] / 60:.1f} min"
        + (
            f" ({result['startup_total_s'] / 60:.1f} of them starting servers)"
            if "startup_total_s" in result
            else ""
        )
        + f". A: `nimctl serve --profile tiny`; B: {b_what} Each turn starts with a warm-up run."
        + (
            " nimctl's environment: "
            + ", ".join(f"`{k}={v}`" for k, v in plan.get("nimctl_env", ()))
            + "."
            if plan.get("nimctl_env")
            else ""
        ),
        "",
        f"- **keep-alive**: {plan['keepalive_requests']} streamed chats one after the other on one "
        f"kept-alive connection ({result['keepalive_tokens']} tokens, ignore_eos, greedy), then "
        f"{plan['models_requests']} `GET /v1/models` on one connection; raw-socket client "
        "(`bench/rawhttp.py`), TTFT = first event with content.",
        "- **load**: vLLM's `bench serve` as a library, `--backend openai-chat --dataset-name "
        f"random --random-input-len {result['input_len']} --random-output-len "
        f"{result['output_len']} --ignore-eos`, streaming, "
        + (
            "`--num-prompts max(8, 2 x concurrency)`."
            if plan["quick"]
            else "`--num-prompts max(16, 4 x concurrency)`."
        ),
        "- **HTTP CPU per request**: utime+stime of the HTTP process alone (`/proc/PID/stat`; "
        "engine core and worker excluded), before and after each run, over its requests.",
    ]
    if plan["image_runs"]:
        runs = ", ".join(f"{n} requests at concurrency {c}" for c, n in plan["image_runs"])
        lines.append(
            f"- **5 images**: one request with {IMAGE_COUNT} base64 PNGs of 1000 x 1000 random "
            f"noise (about 3 MB each, 20 MB of JSON), `max_tokens` {IMAGE_MAX_TOKENS}, "
            f"non-streamed: {runs}, over kept-alive connections. Requests/s is the "
            "count over the run's wall time, so its last requests weigh on it; the latency p50 "
            "is the median request's.",
        )
    if plan["probe"]:
        top = max(plan["concurrencies"])
        during = f"a second load run at concurrency {top}"
        if probed_per_round(result):
            during += f" (`--num-prompts` {Plan(**plan).probe_prompts_for(top)})"
        lines.append(
            "- **probe**: `GET /v1/health/live` (vLLM's server: `/health`) every 50 ms from a "
            f"process of its own (`bench/probe.py`, one kept-alive connection) during {during}."
        )
    lines += [
        "",
        "Ratio = median over rounds of the per-round ratio A/B (higher is better for tok/s and "
        "req/s, lower for times and CPU), with the lowest and highest per-round ratio beside it; "
        "difference = median of per-round A - B.",
        "",
        f"| figure | nimctl (A), median | {b_name}, median | ratio A/B | per-round ratios "
        "| difference A-B |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["table"]:
        unit = row["unit"]
        lines.append(
            f"| {row['figure']} | {_fmt(row['nimctl_median'], unit)} {unit} | "
            f"{_fmt(row['vllm_median'], unit)} {unit} | {row['ratio_median']:.3f} | "
            f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f} | {row['diff_median']:+.2f} {unit} |"
        )
    lines += ["", "Per round (A / B):", ""]
    for row in result["table"]:
        unit = row["unit"]
        pairs = ", ".join(
            f"{_fmt(a, unit)} / {_fmt(b, unit)}"
            for a, b in zip(row["nimctl"], row["vllm"], strict=True)
        )
        lines.append(f"- {row['figure']} ({unit}): {pairs}")
    if "engine" in result:
        lines += [
            "",
            "The bare engine (C: AsyncLLM in-process, no HTTP, same load shape), medians:",
            "",
            "| concurrency | output tok/s | TTFT p50 ms | A/C tok/s | B/C tok/s |",
            "|---|---|---|---|---|",
        ]
        table = {row["figure"]: row for row in result["table"]}
        for c in plan["concurrencies"]:
            engine = result["engine"][_key(result["engine"], c)]
            tput = table[f"output tok/s, c={c}"]
            lines.append(
                f"| {c} | {engine['output_throughput']:.0f} | {engine['median_ttft_ms']:.1f} | "
                f"{tput['nimctl_median'] / engine['output_throughput']:.3f} | "
                f"{tput['vllm_median'] / engine['output_throughput']:.3f} |"
            )
    start, rss = result["startup"], result["peak_rss_gib"]
    lines += [
        "",
        f"| | nimctl (A) | {b_name} |",
        "|---|---|---|",
        f"| time to live (HTTP answers) | {start['nimctl']['live_s']:.2f} s | "
        f"{start['vllm']['live_s']:.1f} s"
        + ("" if noise else " (no HTTP before the engine is up)")
        + " |",
        f"| time to ready | {start['nimctl']['ready_s']:.1f} s | "
        f"{start['vllm']['ready_s']:.1f} s |",
    ]
    if "probe_under_load" in result:
        probes = result["probe_under_load"]
        top = max(plan["concurrencies"])
        counts = ""
        if "n" in probes["nimctl"]:
            counts = (
                f", all rounds pooled ({probes['nimctl']['n']} / {probes['vllm']['n']} samples)"
            )
        lines.append(
            f"| probe latency while {top} streams run, p50 / p99{counts} | "
            f"{probes['nimctl']['median_ms']:.1f} / {probes['nimctl']['p99_ms']:.1f} ms "
            f"(`/v1/health/live`) | {probes['vllm']['median_ms']:.1f} / "
            f"{probes['vllm']['p99_ms']:.1f} ms "
            + ("(`/v1/health/live`) |" if noise else "(`/health`) |")
        )
    lines.append(
        f"| peak RSS of the process tree | {rss['nimctl']:.2f} GiB | {rss['vllm']:.2f} GiB |"
    )
    if not plan["quick"] and not noise:
        lines += ["", "![serving figures](benchmarks.png)"]
    if not noise:
        lines += [
            "",
            "Targets (issue 11): keep-alive TTFT p50 <= B + 2 ms; output tok/s >= 1.00 x B at "
            "every concurrency; HTTP CPU per request <= 1.05 x B; live p99 under load <= B's "
            "/health p99; the five-image request at least as fast as on B.",
        ]
    if result.get("failures"):
        lines += ["", "Runs with failed requests, repeated (not counted):", ""]
        lines += [f"- {failure}" for failure in result["failures"]]
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = result["plan"]
    concurrencies = plan["concurrencies"]
    table = {row["figure"]: row for row in result["table"]}
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    (tput, ttft), (keep, cpu) = axes
    for name in ("nimctl", "vllm"):
        tput.plot(
            concurrencies,
            [table[f"output tok/s, c={c}"][f"{name}_median"] for c in concurrencies],
            marker="o",
            label=LABELS[name],
        )
        ttft.plot(
            concurrencies,
            [table[f"TTFT p50, c={c}"][f"{name}_median"] for c in concurrencies],
            marker="o",
            label=LABELS[name],
        )
        rounds = table["keep-alive TTFT p50 (c=1)"][name]
        keep.plot(range(1, len(rounds) + 1), rounds, marker="o", label=LABELS[name])
    if "engine" in result:
        engine = [result["engine"][_key(result["engine"], c)] for c in concurrencies]
        tput.plot(
            concurrencies, [e["output_throughput"] for e in engine], marker="o", label="C engine"
        )
        ttft.plot(
            concurrencies, [e["median_ttft_ms"] for e in engine], marker="o", label="C engine"
        )
    cpu_rows = [row for row in result["table"] if "HTTP CPU" in row["figure"]]
    names = [
        row["figure"]
        .replace("HTTP CPU per request, ", "")
        .replace("5 images: HTTP CPU per request, ", "5 images, ")
        .replace("c=", "streams c=" if not row["figure"].startswith("5 images") else "c=")
        for row in cpu_rows
    ]
    positions = np.arange(len(cpu_rows))
    cpu.barh(positions - 0.2, [r["nimctl_median"] for r in cpu_rows], 0.4, label=LABELS["nimctl"])
    cpu.barh(positions + 0.2, [r["vllm_median"] for r in cpu_rows], 0.4, label=LABELS["vllm"])
    cpu.set_yticks(positions, names)
    cpu.set(title="HTTP process CPU per request (ms, median)")
    keep.set_xticks(range(1, plan["rounds"] + 1))
    tput.set(title="Output tokens/s (median)", xlabel="concurrency", xscale="log")
    ttft.set(title="TTFT p50 (ms, median)", xlabel="concurrency", xscale="log", yscale="log")
    keep.set(title="Keep-alive TTFT p50 at concurrency 1, per round (ms)", xlabel="round")
    for axis in (tput, ttft):
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
    for axis in (tput, ttft, keep, cpu):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str]) -> None:
    from bench.report import DOC, write_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the development-loop run")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, quick 3)")
    parser.add_argument(
        "--concurrency",
        help="comma-separated load concurrencies instead of the plan's (e.g. 32), to look closer",
    )
    parser.add_argument(
        "--probe", action="store_true", help="with --quick: also the probe under load"
    )
    parser.add_argument(
        "--images", action="store_true", help="with --quick: also the five-image requests"
    )
    parser.add_argument(
        "--baseline",
        choices=("vllm", "nimctl"),
        default="vllm",
        help="B: vLLM's server, or a second nimctl (the noise floor: A against itself)",
    )
    parser.add_argument("--report", type=Path, help="re-render a saved run's JSON")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument(
        "--nimctl-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for nimctl only (e.g. UVICORN_LOOP=asyncio), to compare variants",
    )
    args = parser.parse_args(argv)
    if args.report:
        outcome = summarize(json.loads(args.report.read_text()))
    else:
        env = tuple((k, v) for k, _, v in (item.partition("=") for item in args.nimctl_env))
        plan = plan_for(args.quick, args.rounds or int(os.environ.get("BENCH_ROUNDS", "0")), env)
        if args.concurrency:
            levels = tuple(int(c) for c in args.concurrency.split(","))
            plan = replace(plan, concurrencies=levels)
        if args.probe:
            plan = replace(plan, probe=True)
        if args.images and plan.quick:
            plan = replace(plan, image_runs=plan_for(False, None).image_runs)
        plan = replace(plan, baseline=args.baseline)
        outcome = run(plan)
        saved = CACHE / f"{plan.section}-{time.strftime('%Y%m%dT%H%M%S')}.json"
        saved.write_text(json.dumps(outcome, indent=2, default=str))
        print(f"saved {saved}", file=sys.stderr)
    text = report(outcome)
    print(text)
    if args.no_doc:
        return
    section = Plan(**outcome["plan"]).section
    if section == "serving":
        chart(outcome, DOC.with_name("benchmarks.png"))
    write_section(section, SECTION_TITLES[section], text)


if __name__ == "__main__":
    main(sys.argv[1:])
