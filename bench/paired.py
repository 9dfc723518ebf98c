"""HTTP CPU per request and throughput, nimctl (A) against vLLM's server (B), in short
alternating blocks: the layout that can tell a few per cent apart on a noisy machine.

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
from bench.serving import KEEPALIVE_PROMPT

SIDES = ("A", "B")
TARGET_CPU = 1.05  # issue 11: HTTP CPU per request <= 1.05 x vLLM's server
INTERVAL = 0.90
MIN_PAIRS = 10  # fewer: no verdict (a bootstrap of a handful of pairs is over-sure)
SECTIONS = {
    "vllm": ("serving-paired", "Serving, paired short blocks: nimctl against vLLM's server"),
    "nimctl": ("serving-paired-noise", "Serving, paired short blocks: nimctl against itself"),
}


@dataclass(frozen=True)
class Workload:
    name: str
    concurrency: int
    max_tokens: int
    requests: int  # per block
    pairs: int


WORKLOADS = (
    Workload("c=1, kept-alive", 1, 64, 4, 40),
    Workload("c=16", 16, 128, 32, 30),
    Workload("c=32", 32, 128, 64, 24),
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


def block(server: Running, work: Workload, attempts: int = 3) -> dict[str, float]:
    """One block of `work` on `server` (resumed): CPU per request and output tok/s."""
    pid = server.http_pids()[0]
    request = encode_request(
        "POST",
        "/v1/chat/completions",
        server.port,
        chat_body(KEEPALIVE_PROMPT, work.max_tokens, True, MODEL),
    )
    for _ in range(attempts):
        asyncio.run(closed_loop(server.port, [request], 1, sse=True))  # wakes the engine
        before = thread_times(pid)
        done, wall = asyncio.run(
            closed_loop(server.port, [request] * work.requests, work.concurrency, sse=True)
        )
        cpu = cpu_between(before, thread_times(pid))
        bad = [x for x in done if x.status != 200 or x.first_content is None]
        if bad or len(done) != work.requests:
            raise RuntimeError(f"{server.name}: {len(bad)} bad answers, first {bad[:1]}")
        if cpu is not None:
            return {
                "cpu_ms_per_request": cpu * 1000 / work.requests,
                "output_tok_s": work.requests * work.max_tokens / wall,
            }
    raise RuntimeError(f"{server.name}: its threads changed in {attempts} blocks in a row")


def run(baseline: str, scale: float, b_env: dict[str, str]) -> dict[str, Any]:
    logdir = CACHE / "logs" / time.strftime("%Y%m%dT%H%M%S")
    logdir.mkdir(parents=True, exist_ok=True)
    pairs = {w.name: max(2, round(w.pairs * scale)) for w in WORKLOADS}
    blocks: dict[str, dict[str, list[dict[str, float]]]] = {
        w.name: {s: [] for s in SIDES} for w in WORKLOADS
    }
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
                        blocks[work.name][side].append(block(server, work))
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
    medians = np.median(rng.choice(sample, size=(draws, sample.size)), axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail))


def compare(a: list[float], b: list[float]) -> dict[str, float]:
    """A against B, pair by pair: the median ratio, its interval, the pooled ratio."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    low, high = bootstrap_median(ratios)
    return {
        "a": statistics.median(a),
        "b": statistics.median(b),
        "ratio": statistics.median(ratios),
        "low": low,
        "high": high,
        "pooled": sum(a) / sum(b),
        "min": min(ratios),
        "max": max(ratios),
    }


def summarize(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for work in result["workloads"]:
        sides = result["blocks"][work["name"]]
        out[work["name"]] = {
            key: compare([x[key] for x in sides["A"]], [x[key] for x in sides["B"]])
            for key in ("cpu_ms_per_request", "output_tok_s")
        }
    return out


def verdict(figure: dict[str, float], key: str, pairs: int) -> str:
    """Met when the whole interval is on the right side of the target, unresolved when the
    target is inside it."""
    if pairs < MIN_PAIRS:
        return f"fewer than {MIN_PAIRS} pairs"
    if key == "cpu_ms_per_request":
        if figure["high"] <= TARGET_CPU:
            return "met"
        return "missed" if figure["low"] > TARGET_CPU else "not resolved"
    if figure["low"] >= 1.0:
        return "met"
    return "missed" if figure["high"] < 1.0 else "not resolved"


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
        "cycle. A block: one unmeasured request, then the block's streamed chats (the same "
        "prompt of about 130 tokens, greedy, ignore_eos) over `concurrency` kept-alive "
        "connections (`bench/rawhttp.py`). CPU: run time of the HTTP process's threads "
        "(`/proc/PID/task/*/schedstat`, ns), engine processes excluded. Ratio: median of the "
        f"per-pair ratios A/B with a bootstrap {INTERVAL:.0%} interval; pooled: the sum of A's "
        "block values over B's. Why this layout: `bench/paired.py`'s docstring. Every block "
        "starts right after a resume (cold caches, timers catching up), so its milliseconds "
        "run higher than a long run's: compare the ratios.",
        "",
        f"| workload | figure | nimctl (A), median | {b_name}, median | ratio A/B "
        f"| {INTERVAL:.0%} interval | pooled | pair ratios "
        + ("| interval holds 1.00 |" if against_itself else "| target |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for work in result["workloads"]:
        rows = summary[work["name"]]
        label = (
            f"{work['name']}: {work['pairs']} pairs of {work['requests']} x "
            f"{work['max_tokens']} tokens"
        )
        for key, title, unit, target in (
            ("cpu_ms_per_request", "HTTP CPU per request", "ms", f"<= {TARGET_CPU}"),
            ("output_tok_s", "output tok/s", "tok/s", ">= 1.00"),
        ):
            if key == "output_tok_s" and work["concurrency"] == 1:
                continue  # one stream at a time: the engine's pace, shown by bench.serving
            f = rows[key]
            judged = (
                ("yes" if f["low"] <= 1.0 <= f["high"] else "no")
                if against_itself
                else f"{target}: {verdict(f, key, work['pairs'])}"
            )
            lines.append(
                f"| {label} | {title} | {f['a']:.1f} {unit} | {f['b']:.1f} {unit} "
                f"| {f['ratio']:.3f} | {f['low']:.3f}-{f['high']:.3f} | {f['pooled']:.3f} "
                f"| {f['min']:.2f}-{f['max']:.2f} | {judged} |"
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
