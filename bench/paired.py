"""Issue 11's targets, nimctl (A) against vLLM's server (B), in short alternating blocks:
the layout that can tell a few per cent apart on a noisy machine.

Why next to bench.serving: on this 2-core VM the same server's CPU per request drifts by up
to 2x within a minute, with no steal time reported (a 64-token stream, 20 in a row: block
medians of 61, then 35 ms in the same nimctl; vLLM's server 52, then 27 ms). bench.serving's
turns last about 25 s and the two servers' turns are a minute or more apart, so its per-round
ratios of CPU per request spread 0.6-1.5 (12 rounds, 2026-12-03) and a 5 % target sits inside
that spread whatever the code does. Here both servers stay up, each paused (SIGSTOP of its
process group, engine included) while the other works, and they swap after every block of one
to four seconds, A B in one cycle and B A in the next. The hope was that a drift slower than a
block would cancel within a pair; measured, the pairs spread as widely as the turns (0.63-1.42
at c=1: the noise is faster than a block). What narrows the interval is the number of pairs,
tens per workload in the time of a few turns. Each figure is the median of per-pair ratios with
a bootstrap 90 % interval, and the pooled ratio (the sum of A's block values over B's).

CPU is the run time of the HTTP process's threads from /proc/PID/task/*/schedstat, in
nanoseconds: /proc/PID/stat counts 10 ms ticks, coarse for a block of 0.1-1 s of CPU. A thread
that ends takes its time with it, so a block during which a thread came or went is measured
again. Each block starts with one unmeasured request (the first after a resume wakes the engine).

Every target of issue 11 has its workload here: TTFT at concurrency 1 (a difference A - B in
ms, as the target is +2 ms), output tok/s at 1, 16 and 32, HTTP CPU per request, the health
probe's p99 while 32 streams run (its own blocks, so that the probe's requests stay out of the
CPU figures; the p99 of all of a side's samples, the interval from resampled pairs of blocks)
and the request with five 1-megapixel images (requests/s and CPU, at concurrency 1 and 4).

`--baseline nimctl`: a second nimctl as B, so every ratio should be 1.00 and its interval shows
what this layout can resolve on the machine of the day.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.rawhttp import chat_body, closed_loop, encode_request
from bench.servers import CACHE, MODEL, Running, start_nimctl, start_vllm
from bench.serving import IMAGE_MAX_TOKENS, KEEPALIVE_PROMPT, ProbeLatency, images_body

SIDES = ("A", "B")
INTERVAL = 0.90
MIN_PAIRS = 10  # fewer: no verdict (a bootstrap of a handful of pairs is over-sure)
SECTIONS = {
    "vllm": ("serving-paired", "Serving, paired short blocks: nimctl against vLLM's server"),
    "nimctl": ("serving-paired-noise", "Serving, paired short blocks: nimctl against itself"),
}


@dataclass(frozen=True)
class Figure:
    """One of issue 11's targets as this layout measures it."""

    title: str
    unit: str
    target: float
    higher_is_better: bool
    difference: bool = False  # compared as A - B in `unit` (the target is in it), else A / B


FIGURES = {
    "ttft_ms": Figure("TTFT p50", "ms", 2.0, False, difference=True),  # <= B + 2 ms
    "cpu_ms_per_request": Figure("HTTP CPU per request", "ms", 1.05, False),
    "output_tok_s": Figure("output tok/s", "tok/s", 1.00, True),
    "probe_p99_ms": Figure("health probe p99", "ms", 1.00, False),  # <= B's /health p99
    "requests_per_s": Figure("requests/s", "req/s", 1.00, True),  # at least as fast
}


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "chat": streamed chats; "probe": the same, the health endpoint polled; "images"
    concurrency: int
    max_tokens: int
    requests: int  # per block
    pairs: int
    figures: tuple[str, ...]


CHAT_FIGURES = ("cpu_ms_per_request", "output_tok_s")
IMAGE_FIGURES = ("requests_per_s", "cpu_ms_per_request")
WORKLOADS = (
    Workload("c=1, kept-alive", "chat", 1, 64, 4, 40, ("ttft_ms", *CHAT_FIGURES)),
    Workload("c=16", "chat", 16, 128, 32, 30, CHAT_FIGURES),
    Workload("c=32", "chat", 32, 128, 64, 24, CHAT_FIGURES),
    Workload("c=32, health probe", "probe", 32, 128, 192, 16, ("probe_p99_ms",)),
    Workload("5 images, c=1", "images", 1, IMAGE_MAX_TOKENS, 3, 20, IMAGE_FIGURES),
    Workload("5 images, c=4", "images", 4, IMAGE_MAX_TOKENS, 8, 16, IMAGE_FIGURES),
)


def thread_times(pid: int) -> dict[int, int]:
    """Nanoseconds on CPU so far of each thread of `pid`."""
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
            times[int(tid)] = int(handle.read().split()[0])
    return times


def cpu_between(before: dict[int, int], after: dict[int, int]) -> float | None:
    """Seconds of CPU the threads took between two readings; None if a thread came or went."""
    if before.keys() != after.keys():
        return None
    return sum(after[t] - before[t] for t in after) / 1e9


def block(server: Running, work: Workload, body: bytes, attempts: int = 3) -> dict[str, Any]:
    """One block of `work` on `server` (resumed), its figures by name (probe: the samples)."""
    pid = server.http_pids()[0]
    request = encode_request("POST", "/v1/chat/completions", server.port, body)
    sse = work.kind != "images"
    for _ in range(attempts):
        asyncio.run(closed_loop(server.port, [request], 1, sse=sse))  # wakes the engine
        probe = ProbeLatency(server.base_url + server.live_path) if work.kind == "probe" else None
        before = thread_times(pid)
        try:
            done, wall = asyncio.run(
                closed_loop(server.port, [request] * work.requests, work.concurrency, sse=sse)
            )
        finally:
            samples = probe.stop() if probe is not None else []
        cpu = cpu_between(before, thread_times(pid))
        bad = [x for x in done if x.status != 200 or (sse and x.first_content is None)]
        if bad or len(done) != work.requests:
            raise RuntimeError(f"{server.name}: {len(bad)} bad answers, first {bad[:1]}")
        if probe is not None:
            return {"probe_ms": [s * 1000 for s in samples]}
        if cpu is not None:
            figures = {
                "cpu_ms_per_request": cpu * 1000 / work.requests,
                "requests_per_s": work.requests / wall,
            }
            if sse:  # ignore_eos: every stream is max_tokens long
                figures["output_tok_s"] = work.requests * work.max_tokens / wall
                figures["ttft_ms"] = statistics.median(x.ms(x.first_content) for x in done)
            return figures
    raise RuntimeError(f"{server.name}: its threads changed in {attempts} blocks in a row")


def bodies() -> dict[str, bytes]:
    """Each workload's request body: the benchmark's prompt, or bench.serving's five images."""
    images = images_body()  # 20 MB of JSON: built once
    return {
        w.name: images
        if w.kind == "images"
        else chat_body(KEEPALIVE_PROMPT, w.max_tokens, True, MODEL)
        for w in WORKLOADS
    }


def run(baseline: str, scale: float, b_env: dict[str, str]) -> dict[str, Any]:
    logdir = CACHE / "logs" / time.strftime("%Y%m%dT%H%M%S")
    logdir.mkdir(parents=True, exist_ok=True)
    pairs = {w.name: max(2, round(w.pairs * scale)) for w in WORKLOADS}
    blocks: dict[str, dict[str, list[dict[str, Any]]]] = {
        w.name: {s: [] for s in SIDES} for w in WORKLOADS
    }
    body = bodies()
    began = time.monotonic()
    servers: dict[str, Running] = {}
    try:
        for side in SIDES:
            log = logdir / f"paired-{side}.log"
            if side == "A":
                servers[side] = start_nimctl("tiny", log)
            elif baseline == "nimctl":
                servers[side] = start_nimctl("tiny", log, b_env)
            else:
                servers[side] = start_vllm(log)
            servers[side].pause()
        for cycle in range(max(pairs.values())):
            for work in WORKLOADS:
                if cycle >= pairs[work.name]:
                    continue
                for side in SIDES if cycle % 2 == 0 else SIDES[::-1]:
                    with servers[side].turn() as server:
                        blocks[work.name][side].append(block(server, work, body[work.name]))
            print(f"cycle {cycle + 1}/{max(pairs.values())}", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return {
        "baseline": baseline,
        "b_env": b_env,
        "workloads": [asdict(w) | {"pairs": pairs[w.name]} for w in WORKLOADS],
        "blocks": blocks,
        "seconds": time.monotonic() - began,
        "ended": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def bootstrap_median(
    ratios: list[float], level: float = INTERVAL, draws: int = 4000
) -> tuple[float, float]:
    """A percentile bootstrap interval for the median of `ratios` (pairs resampled)."""
    rng = np.random.default_rng(0)  # the same data gives the same interval
    sample = np.asarray(ratios)
    return percentiles(np.median(rng.choice(sample, size=(draws, sample.size)), axis=1), level)


def percentiles(draws: Any, level: float = INTERVAL) -> tuple[float, float]:
    """The central `level` of a bootstrap's draws."""
    tail = (1 - level) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def compare(a: list[float], b: list[float], difference: bool = False) -> dict[str, float]:
    """A against B, pair by pair: the median ratio (or difference), its interval, the pooled
    ratio (the sums' ratio; for differences, the mean difference)."""
    if difference:
        pairs = [x - y for x, y in zip(a, b, strict=True)]
        pooled = statistics.fmean(pairs)
    else:
        pairs = [x / y for x, y in zip(a, b, strict=True)]
        pooled = sum(a) / sum(b)
    low, high = bootstrap_median(pairs)
    return {
        "a": statistics.median(a),
        "b": statistics.median(b),
        "ratio": statistics.median(pairs),
        "low": low,
        "high": high,
        "pooled": pooled,
        "min": min(pairs),
        "max": max(pairs),
    }


def p99(samples: list[float]) -> float:
    return float(np.percentile(samples, 99))


def compare_p99(a: list[list[float]], b: list[list[float]], draws: int = 2000) -> dict[str, float]:
    """A's p99 over B's, each of all its blocks' samples; the interval resamples pairs of
    blocks (a p99 of one block's hundred samples is its largest one or two: too noisy to pair)."""

    def pooled(blocks: list[list[float]], picks: Any) -> float:
        return p99([x for i in picks for x in blocks[i]])

    every = range(len(a))
    ratio = pooled(a, every) / pooled(b, every)
    rng = np.random.default_rng(0)
    picked = rng.integers(0, len(a), size=(draws, len(a)))
    low, high = percentiles([pooled(a, picks) / pooled(b, picks) for picks in picked])
    per_pair = [p99(x) / p99(y) for x, y in zip(a, b, strict=True)]
    return {
        "a": pooled(a, every),
        "b": pooled(b, every),
        "ratio": ratio,
        "low": low,
        "high": high,
        "pooled": ratio,
        "min": min(per_pair),
        "max": max(per_pair),
    }


def figures_of(work: dict[str, Any]) -> tuple[str, ...]:
    """A workload's figures; runs saved before they were named had CPU, and tok/s above c=1."""
    if "figures" in work:
        return tuple(work["figures"])
    return CHAT_FIGURES if work["concurrency"] > 1 else CHAT_FIGURES[:1]


def summarize(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for work in result["workloads"]:
        sides = result["blocks"][work["name"]]
        rows = {}
        for key in figures_of(work):
            if key == "probe_p99_ms":
                rows[key] = compare_p99(
                    [x["probe_ms"] for x in sides["A"]], [x["probe_ms"] for x in sides["B"]]
                )
            else:
                rows[key] = compare(
                    [x[key] for x in sides["A"]],
                    [x[key] for x in sides["B"]],
                    FIGURES[key].difference,
                )
        out[work["name"]] = rows
    return out


def verdict(figure: dict[str, float], key: str, pairs: int) -> str:
    """Met when the whole interval is on the right side of the target, unresolved when the
    target is inside it."""
    if pairs < MIN_PAIRS:
        return f"fewer than {MIN_PAIRS} pairs"
    spec, low, high = FIGURES[key], figure["low"], figure["high"]
    if spec.higher_is_better:
        met, missed = low >= spec.target, high < spec.target
    else:
        met, missed = high <= spec.target, low > spec.target
    return "met" if met else "missed" if missed else "not resolved"


def target_text(key: str) -> str:
    spec = FIGURES[key]
    sign = ">=" if spec.higher_is_better else "<="
    return (
        f"{sign} B + {spec.target:g} {spec.unit}"
        if spec.difference
        else f"{sign} {spec.target:.2f}"
    )


def describe(work: dict[str, Any]) -> str:
    if work.get("kind") == "images":
        return f"{work['name']}: {work['pairs']} pairs of {work['requests']} requests"
    return (
        f"{work['name']}: {work['pairs']} pairs of {work['requests']} x {work['max_tokens']} tokens"
    )


def report(result: dict[str, Any]) -> str:
    b_env = " ".join(f"{k}={v}" for k, v in result.get("b_env", {}).items())
    b_name = "vLLM server (B)"
    against_itself = result["baseline"] == "nimctl"  # the targets are against vLLM's server
    if against_itself:
        b_name = f"nimctl with {b_env} (B)" if b_env else "second nimctl (B)"
    summary = summarize(result)
    command = "python -m bench.paired" + (" --baseline nimctl" if against_itself else "")
    command += "".join(f" --b-env {k}={v}" for k, v in result.get("b_env", {}).items())
    lines = [
        f"Command: `{command}`; took {result['seconds'] / 60:.1f} min"
        + (f", ended {result['ended']}" if "ended" in result else "")
        + ". Both servers started "
        "once, each paused (SIGSTOP of its process group) while the other works; they swap "
        "after every block, A B in one cycle and B A in the next, every workload in every "
        "cycle. A block: one unmeasured request, then the block's requests over "
        "`concurrency` kept-alive connections (`bench/rawhttp.py`): streamed chats (the same "
        "prompt of about 130 tokens, greedy, ignore_eos), or the request with five base64 "
        "1-megapixel PNGs (`max_tokens` 8, not streamed). CPU: run time of the HTTP "
        "process's threads (`/proc/PID/task/*/schedstat`, ns), engine processes excluded. "
        "TTFT: the block's median; compared as the difference A - B in ms. Health probe: "
        "`GET /v1/health/live` (B: `/health`) every 50 ms from a process of its own "
        "(`bench/probe.py`) in blocks of their own; p99 of all of a side's samples. Ratio: "
        f"median of the per-pair ratios A/B (differences for TTFT) with a bootstrap "
        f"{INTERVAL:.0%} interval; pooled: the sum of A's block values over B's (TTFT: the "
        "mean difference). Why this layout: `bench/paired.py`'s docstring. Every block "
        "starts right after a resume (cold caches, timers catching up), so its milliseconds "
        "run higher than a long run's: compare the ratios.",
        "",
        f"| workload | figure | nimctl (A), median | {b_name}, median | A/B (TTFT: A-B) "
        f"| {INTERVAL:.0%} interval | pooled | pairs "
        + ("| interval holds no difference |" if against_itself else "| target |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for work in result["workloads"]:
        rows = summary[work["name"]]
        for key in figures_of(work):
            spec, f = FIGURES[key], rows[key]
            same = 0.0 if spec.difference else 1.0
            judged = (
                ("yes" if f["low"] <= same <= f["high"] else "no")
                if against_itself
                else f"{target_text(key)}: {verdict(f, key, work['pairs'])}"
            )
            if key == "probe_p99_ms":
                a, b = f"p99 {f['a']:.1f} ms", f"p99 {f['b']:.1f} ms"
            else:
                a, b = f"{f['a']:.1f} {spec.unit}", f"{f['b']:.1f} {spec.unit}"
            number = "{:+.2f}" if spec.difference else "{:.3f}"
            span = "{:+.2f}" if spec.difference else "{:.2f}"
            lines.append(
                f"| {describe(work)} | {spec.title} | {a} | {b} "
                f"| {number.format(f['ratio'])} "
                f"| {number.format(f['low'])} to {number.format(f['high'])} "
                f"| {number.format(f['pooled'])} "
                f"| {span.format(f['min'])} to {span.format(f['max'])} | {judged} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    from bench.report import write_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", choices=("vllm", "nimctl"), default="vllm")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="pairs per workload, times this (default 1)"
    )
    parser.add_argument(
        "--b-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --baseline nimctl: B's environment (e.g. PYTHONPATH=<worktree of a commit>)",
    )
    parser.add_argument("--report", help="re-render a saved run's JSON")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args(argv)
    if args.report:
        result = json.loads(Path(args.report).read_text())
    else:
        b_env = dict(item.partition("=")[::2] for item in args.b_env)
        if b_env and args.baseline != "nimctl":
            parser.error("--b-env is for --baseline nimctl")
        result = run(args.baseline, args.scale, b_env)
        key = SECTIONS[args.baseline][0]
        saved = CACHE / f"{key}-{time.strftime('%Y%m%dT%H%M%S')}.json"
        saved.write_text(json.dumps(result, indent=2))
        print(f"saved {saved}", file=sys.stderr)
    text = report(result)
    print(text)
    if not args.no_doc and not result.get("b_env"):  # a comparison of two commits: printed only
        write_section(*SECTIONS[result["baseline"]], text)


if __name__ == "__main__":
    main(sys.argv[1:])
