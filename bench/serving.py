"""Serving benchmark: nimctl (A) against vLLM's own OpenAI server (B) and the bare engine (C).

A and B serve the same generated tiny model with the same engine arguments. vLLM's own load
generator (`vllm bench serve`, run as a library) drives both at each concurrency, streaming, with
a fixed output length (ignore_eos), in rounds A B A B ..., each server started alone for its
turn (two servers on two cores disturb each other); medians and per-round ratios are reported.
C runs the same shape of load on AsyncLLM in-process, the limit any server can reach. Also
measured: /v1/health/live while 32 streams run, time to live and to ready, peak RSS of each
process tree.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.servers import CACHE, PYTHON, REPO, Running, start_nimctl, start_vllm
from nimctl.engine.tiny_model import ensure_tiny_model
from nimctl.profiles import ProfileStore, builtin_profiles_dir

MODEL = "nimctl/tiny-vlm"
CONCURRENCIES = (1, 8, 32)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))  # fewer for a quick look
INPUT_LEN = 128
OUTPUT_LEN = 128
METRICS = (
    "output_throughput",
    "request_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_itl_ms",
    "p99_itl_ms",
)


def prompts_for(concurrency: int) -> int:
    return max(16, 4 * concurrency)


def vllm_bench(base_url: str, tokenizer: Path, concurrency: int, seed: int) -> dict[str, float]:
    """One run of vLLM's `bench serve` against an OpenAI-compatible chat endpoint."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
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
            str(OUTPUT_LEN),
            "--ignore-eos",
            "--num-prompts",
            str(prompts_for(concurrency)),
            "--max-concurrency",
            str(concurrency),
            "--percentile-metrics",
            "ttft,tpot,itl",
            "--metric-percentiles",
            "50,99",
            "--seed",
            str(seed),
            "--disable-tqdm",
        ]
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # its own report; it names failures there
        result = main(args)
    if result.get("failed"):
        raise BenchFailed(
            f"{result['failed']} requests failed against {base_url}:\n{printed.getvalue()[-4000:]}"
        )
    return {metric: float(result[metric]) for metric in METRICS}


class BenchFailed(RuntimeError):
    pass


def measured(
    server: Running, tokenizer: Path, concurrency: int, seed: int, failures: list[str]
) -> dict[str, float]:
    """A run without failed requests: a failed run is noted (for the report) and repeated."""
    for attempt in range(4):
        try:
            return vllm_bench(server.base_url, tokenizer, concurrency, seed)
        except BenchFailed as exc:
            reason = str(exc).splitlines()
            kinds = sorted({line.rsplit(": ", 1)[0] for line in reason if "Error: " in line})
            failures.append(
                f"{server.name}, concurrency {concurrency}, attempt {attempt + 1}: "
                f"{reason[0]} {', '.join(kinds)}"
            )
    raise RuntimeError(f"{server.name} failed 4 runs in a row: {failures[-4:]}")


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


def latency_summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000,
        "max_ms": ordered[-1] * 1000,
        "n": len(ordered),
    }


def engine_direct(
    model_dir: Path, engine_args: dict[str, Any], log: Path
) -> dict[int, list[dict[str, float]]]:
    config = {
        "model_dir": str(model_dir),
        "engine_args": engine_args,
        "concurrencies": list(CONCURRENCIES),
        "rounds": ROUNDS,
        "input_len": INPUT_LEN,
        "output_len": OUTPUT_LEN,
        "prompts": {str(c): prompts_for(c) for c in CONCURRENCIES},
    }
    with log.open("w") as handle:
        out = subprocess.run(
            [str(PYTHON), "-m", "bench.engine_direct", json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=handle,
            text=True,
            cwd=REPO,
            check=True,
        )
    rows: dict[int, list[dict[str, float]]] = {c: [] for c in CONCURRENCIES}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["concurrency"]].append({m: row[m] for m in METRICS})
    return rows


def median_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: statistics.median(r[m] for r in rows) for m in METRICS}


def run() -> dict[str, Any]:
    model_dir = ensure_tiny_model(CACHE)
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    engine_args = dict(profile.engine_args)
    result: dict[str, Any] = {
        "concurrencies": list(CONCURRENCIES),
        "rounds": ROUNDS,
        "input_len": INPUT_LEN,
        "output_len": OUTPUT_LEN,
    }
    # Kept after the run: the servers' access logs explain a failed request.
    logdir = CACHE / "logs" / time.strftime("%Y%m%dT%H%M%S")
    logdir.mkdir(parents=True, exist_ok=True)

    def start(name: str, round_: int) -> Running:
        log = logdir / f"{name}-{round_}.log"
        if name == "nimctl":
            return start_nimctl("tiny", log)
        hermes = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
        return start_vllm(model_dir, MODEL, engine_args, {"image": 5}, log, hermes)

    names = ("nimctl", "vllm")
    rounds: dict[str, dict[int, list[dict[str, float]]]] = {
        n: {c: [] for c in CONCURRENCIES} for n in names
    }
    probes: dict[str, list[float]] = {n: [] for n in names}
    startups: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    peaks: dict[str, list[float]] = {n: [] for n in names}
    failures: list[str] = []
    result["failures"] = failures
    # One server at a time, A then B in every round: on 2 cores a second (idle) server
    # disturbed the one under load (bursty streams, TTFT x10 for both), so each runs alone,
    # freshly started, and every round also measures start-up and memory.
    for round_ in range(ROUNDS):
        for name in names:
            server = start(name, round_)
            memory = TreeMemory(server.process.pid)
            try:
                assert server.seconds_to_live is not None and server.seconds_to_ready is not None
                startups[name].append((server.seconds_to_live, server.seconds_to_ready))
                measured(server, model_dir, max(CONCURRENCIES), 0, failures)  # warm-up
                for concurrency in CONCURRENCIES:
                    probe = None
                    if concurrency == max(CONCURRENCIES):
                        path = "/v1/health/live" if name == "nimctl" else "/health"
                        probe = ProbeLatency(server.base_url + path)
                    rounds[name][concurrency].append(
                        measured(server, model_dir, concurrency, round_ + 1, failures)
                    )
                    if probe is not None:
                        probes[name] += probe.stop()
            finally:
                server.stop()
                peaks[name].append(memory.stop())
    result["probe_under_load"] = {k: latency_summary(v) for k, v in probes.items()}
    result["startup"] = {
        n: {
            "live_s": statistics.median(live for live, _ in startups[n]),
            "ready_s": statistics.median(ready for _, ready in startups[n]),
        }
        for n in names
    }
    result["peak_rss_gib"] = {n: statistics.median(peaks[n]) for n in names}
    direct = engine_direct(model_dir, engine_args, logdir / "engine.log")
    result["per_round"] = rounds
    result["nimctl"] = {c: median_of(rows) for c, rows in rounds["nimctl"].items()}
    result["vllm"] = {c: median_of(rows) for c, rows in rounds["vllm"].items()}
    result["engine"] = {c: median_of(rows) for c, rows in direct.items()}
    result["ratios"] = {
        c: {
            "throughput_vs_vllm": statistics.median(
                a["output_throughput"] / b["output_throughput"]
                for a, b in zip(rounds["nimctl"][c], rounds["vllm"][c], strict=True)
            ),
            "ttft_p50_minus_vllm_ms": statistics.median(
                a["median_ttft_ms"] - b["median_ttft_ms"]
                for a, b in zip(rounds["nimctl"][c], rounds["vllm"][c], strict=True)
            ),
            "throughput_vs_engine": result["nimctl"][c]["output_throughput"]
            / result["engine"][c]["output_throughput"],
        }
        for c in CONCURRENCIES
    }
    return result


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concurrencies = result["concurrencies"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, label in (
        ("nimctl", "A: nimctl"),
        ("vllm", "B: vLLM server"),
        ("engine", "C: engine in-process"),
    ):
        rows = result[name]
        left.plot(
            concurrencies,
            [rows[c]["output_throughput"] for c in concurrencies],
            marker="o",
            label=label,
        )
        right.plot(
            concurrencies,
            [rows[c]["median_ttft_ms"] for c in concurrencies],
            marker="o",
            label=label,
        )
    left.set(title="Output tokens/s (median)", xlabel="concurrency", xscale="log")
    right.set(
        title="Time to first token, p50 (ms)", xlabel="concurrency", xscale="log", yscale="log"
    )
    for axis in (left, right):
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(result: dict[str, Any]) -> str:
    lines = [
        "Command: `make bench` (this part: `python -m bench.serving`). Load: vLLM's own "
        "`vllm bench serve` (run as a library), `--backend openai-chat --dataset-name random "
        f"--random-input-len {result['input_len']} --random-output-len {result['output_len']} "
        "--ignore-eos`, streaming, `--num-prompts max(16, 4 x concurrency)`, "
        f"{result['rounds']} rounds; in each, A then B is started alone, warmed up (one run at "
        "concurrency 32), measured at each concurrency and stopped, so that machine noise hits "
        "both and neither disturbs the other. Start-up, probe and memory figures are medians "
        "over the rounds. "
        "A: `nimctl serve --profile tiny`; B: `python -m "
        "vllm.entrypoints.launchers.api_server.entry` with the same model and engine arguments; "
        "C: AsyncLLM in-process (no HTTP) with the same load shape.",
        "",
        "![throughput and TTFT by concurrency](benchmarks.png)",
        "",
        "| concurrency | server | output tok/s | req/s | TTFT p50 ms | TTFT p99 ms "
        "| ITL p50 ms | ITL p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result["concurrencies"]:
        for name, label in (("nimctl", "A nimctl"), ("vllm", "B vLLM"), ("engine", "C engine")):
            row = result[name][c]
            lines.append(
                f"| {c} | {label} | {row['output_throughput']:.0f} | "
                f"{row['request_throughput']:.2f} | {row['median_ttft_ms']:.1f} | "
                f"{row['p99_ttft_ms']:.1f} | {row['median_itl_ms']:.2f} | "
                f"{row['p99_itl_ms']:.2f} |"
            )
    lines += [
        "",
        "Per-round comparisons (medians of the rounds):",
        "",
        "| concurrency | throughput A/B | TTFT p50 A-B, ms | throughput A/C |",
        "|---|---|---|---|",
    ]
    for c in result["concurrencies"]:
        r = result["ratios"][c]
        lines.append(
            f"| {c} | {r['throughput_vs_vllm']:.3f} | "
            f"{r['ttft_p50_minus_vllm_ms']:+.1f} | {r['throughput_vs_engine']:.3f} |"
        )
    if "per_round" in result:
        lines += ["", "Output tok/s in each round (A / B):", ""]
        for c in result["concurrencies"]:
            pairs = zip(
                result["per_round"]["nimctl"][c], result["per_round"]["vllm"][c], strict=True
            )
            lines.append(
                f"- concurrency {c}: "
                + ", ".join(
                    f"{a['output_throughput']:.0f} / {b['output_throughput']:.0f}" for a, b in pairs
                )
            )
    start, probes, rss = result["startup"], result["probe_under_load"], result["peak_rss_gib"]
    lines += [
        "",
        "| | nimctl (A) | vLLM server (B) |",
        "|---|---|---|",
        f"| time to live (HTTP answers) | {start['nimctl']['live_s']:.2f} s | "
        f"{start['vllm']['live_s']:.1f} s (no HTTP before the engine is up) |",
        f"| time to ready | {start['nimctl']['ready_s']:.1f} s | "
        f"{start['vllm']['ready_s']:.1f} s |",
        f"| probe latency while 32 streams run, p50 / p99 | {probes['nimctl']['median_ms']:.1f}"
        f" / {probes['nimctl']['p99_ms']:.1f} ms (`/v1/health/live`) | "
        f"{probes['vllm']['median_ms']:.1f} / {probes['vllm']['p99_ms']:.1f} ms (`/health`) |",
        f"| peak RSS of the process tree | {rss['nimctl']:.2f} GiB | {rss['vllm']:.2f} GiB |",
        "",
        "Targets: throughput >= 1.00 x B at every concurrency and >= 0.97 x C; TTFT p50 <= B + "
        "1 ms; live p99 <= 10 ms under load; live within 1 s of process start.",
    ]
    if result.get("failures"):
        lines += ["", "Runs with failed requests, repeated (not counted):", ""]
        lines += [f"- {failure}" for failure in result["failures"]]
    return "\n".join(lines)


if __name__ == "__main__":
    from bench.report import DOC, write_section

    if len(sys.argv) == 3 and sys.argv[1] == "--report":  # re-render a saved run
        outcome = json.loads(Path(sys.argv[2]).read_text())
        for name in ("nimctl", "vllm", "engine", "ratios"):
            outcome[name] = {int(c): row for c, row in outcome[name].items()}
        for name, rows in outcome.get("per_round", {}).items():
            outcome["per_round"][name] = {int(c): row for c, row in rows.items()}
    else:
        outcome = run()
        json.dump(outcome, sys.stdout, indent=2, default=str)
        print()
        CACHE.joinpath(f"serving-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
            json.dumps(outcome, indent=2, default=str)
        )
    chart(outcome, DOC.with_name("benchmarks.png"))
    write_section("serving", "Serving: nimctl, vLLM's server and the bare engine", report(outcome))
