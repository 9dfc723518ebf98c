"""Profile the HTTP process of nimctl and of vLLM's server under the same load (py-spy).

Each server runs alone, is warmed up, and gets streamed chats at concurrency 16 from vLLM's
`bench serve` while `py-spy record --pid <HTTP process> --nonblocking --threads --format raw`
samples it (engine core and worker are other processes and are not sampled). The collapsed
stacks become a flame graph per server (docs/flamegraphs/<server>-c16.svg, drawn here: no
external tool) and a side-by-side reading in docs/benchmarks.md: the share of busy samples per
package (the innermost frame's), and the functions with the largest inclusive share, nimctl's own
functions listed in full. Idle samples (the event loop waiting) are not recorded; the HTTP
process's CPU over the window (from /proc) says how busy it was.

Run: `python -m bench.flames [--seconds 20] [--concurrency 16]` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.servers import CACHE, PYTHON, Running, start_nimctl, start_vllm
from bench.serving import vllm_bench
from nimctl.modelgen.idefics3 import ensure_tiny_model

DOCS = Path(__file__).resolve().parents[1] / "docs"
NAMES = ("nimctl", "vllm")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
PACKAGES = (
    ("nimctl", ("/nimctl/",)),
    ("vllm", ("/vllm/",)),
    ("uvicorn", ("/uvicorn/",)),
    ("starlette", ("/starlette/",)),
    ("fastapi", ("/fastapi/",)),
    ("pydantic", ("/pydantic/", "/pydantic_core/")),
    ("asyncio", ("/asyncio/",)),
    ("uvloop", ("/uvloop/",)),
    ("anyio", ("/anyio/",)),
    ("zmq", ("/zmq/",)),
    ("msgspec", ("/msgspec/",)),
    ("prometheus_client", ("/prometheus_client/",)),
    ("transformers/tokenizers", ("/transformers/", "/tokenizers/")),
    ("json", ("/json/",)),
    ("torch", ("/torch/",)),
    ("logging", ("/logging/",)),
)
COLOURS = {
    "nimctl": "#f28e2b",
    "vllm": "#4e79a7",
    "uvicorn": "#59a14f",
    "starlette": "#8cd17d",
    "fastapi": "#b6992d",
    "pydantic": "#e15759",
    "asyncio": "#bab0ac",
    "uvloop": "#bab0ac",
    "anyio": "#d4a6c8",
}


def package_of(filename: str) -> str:
    for name, markers in PACKAGES:
        if any(marker in filename for marker in markers):
            return name
    return "other"


def short(filename: str) -> str:
    for cut in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if cut in filename:
            return filename.split(cut, 1)[1]
    return filename


# Innermost frames that mean "waiting", which py-spy's idle detection does not always drop:
# the loop's poll (asyncio's selector; uvloop's C loop shows as Runner.run) and idle pool threads.
IDLE_LEAVES = (
    ("select", "selectors.py"),
    ("run", "asyncio/runners.py"),
    ("run_forever", "asyncio/base_events.py"),
    ("_worker", "concurrent/futures/thread.py"),
    ("wait", "threading.py"),
)


def is_idle(frame: tuple[str, str]) -> bool:
    func, file = frame
    return any(func.endswith(name) and file.endswith(path) for name, path in IDLE_LEAVES)


def parse_collapsed(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy's raw output: `frame;frame;... count`, root first; thread/process frames dropped,
    and so are stacks that end waiting (see IDLE_LEAVES)."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            if match is None or frame.startswith(("thread (", "process ")):
                continue
            frames.append((match["func"], match["file"]))
        if frames and not is_idle(frames[-1]):
            stacks.append((frames, int(count)))
    return stacks


def shares(stacks: list[tuple[list[tuple[str, str]], int]]) -> dict[str, Any]:
    """Self share per package, inclusive share per function (nimctl's all, others' top)."""
    total = sum(count for _, count in stacks) or 1
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, count in stacks:
        by_package[package_of(frames[-1][1])] += count
        leaf[f"{frames[-1][0]} ({short(frames[-1][1])})"] += count
        seen = {f"{func} ({short(file)})" for func, file in frames}
        for name in seen:
            inclusive[name] += count
    roots = (
        "<module>",
        "Runner.run",
        "BaseEventLoop.run",
        "_run_once",
        "Handle._run",
        "main (",
        "_serve (",
        "_run_code",
        "_run_module_as_main",
        "run (uvloop",
    )
    top = [(n, c / total) for n, c in inclusive.most_common() if not n.startswith(roots)]
    own = [
        (n, c / total, leaf[n] / total)
        for n, c in inclusive.most_common()
        if "nimctl/" in n and not n.startswith(("_serve (", "main ("))
    ]
    return {
        "samples": total,
        "packages": {k: v / total for k, v in by_package.most_common()},
        "top": top[:25],
        "self": [(n, c / total) for n, c in leaf.most_common(25)],
        "nimctl": own,
    }


def flame_svg(stacks: list[tuple[list[tuple[str, str]], int]], title: str) -> str:
    """A flame graph (root at the bottom), frames coloured by package, hover titles."""
    tree: dict[str, Any] = {"n": 0, "c": {}}
    for frames, count in stacks:
        node = tree
        node["n"] += count
        for func, file in frames:
            key = f"{func} ({short(file)})"
            node = node["c"].setdefault(key, {"n": 0, "c": {}, "p": package_of(file)})
            node["n"] += count
    width, row = 1200.0, 16
    total = tree["n"] or 1
    rects: list[tuple[float, int, float, str, str]] = []
    depth_max = 0

    def walk(node: dict[str, Any], x: float, depth: int) -> None:
        nonlocal depth_max
        for key, child in sorted(node["c"].items()):
            w = child["n"] / total * width
            if w >= 0.3:
                rects.append((x, depth, w, key, child["p"]))
                depth_max = max(depth_max, depth)
                walk(child, x, depth + 1)
            x += w

    walk(tree, 0.0, 0)
    height = (depth_max + 1) * row + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        'font-family="monospace" font-size="11">',
        f'<text x="4" y="16" font-size="14">{html.escape(title)}</text>',
    ]
    for x, depth, w, key, package in rects:
        y = height - (depth + 1) * row - 4
        label = f"{key}: {w / width:.1%} of busy samples"
        colour = COLOURS.get(package, "#edc948" if package == "other" else "#76b7b2")
        out.append(
            f'<g><title>{html.escape(label)}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{row - 1}" fill="{colour}" rx="1"/>'
        )
        chars = int(w / 6.6)
        if chars >= 4:
            text = key if len(key) <= chars else key[: chars - 1] + "…"
            out.append(f'<text x="{x + 2:.1f}" y="{y + 11}">{html.escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def profile(server: Running, tokenizer: Path, seconds: int, concurrency: int, raw: Path) -> dict:
    """Warm up, then sample the HTTP process while streamed chats run at `concurrency`."""
    vllm_bench(server.base_url, tokenizer, concurrency, concurrency, 0, output_len=16)
    pid = server.http_pids()[0]
    cpu = server.http_cpu_seconds()
    began = time.monotonic()
    spy = subprocess.Popen(
        [
            str(PYTHON.with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--duration",
            str(seconds),
            "--nonblocking",
            "--threads",
            "--full-filenames",
            "--format",
            "raw",
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    requests = 0
    try:
        seed = 1
        while spy.poll() is None and time.monotonic() - began < seconds + 120:
            row = vllm_bench(server.base_url, tokenizer, concurrency, 4 * concurrency, seed)
            requests += int(row["completed"])
            seed += 1
        _, err = spy.communicate(timeout=120)
    finally:
        if spy.poll() is None:
            spy.kill()
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode()[-2000:]}")
    took = time.monotonic() - began
    busy = (server.http_cpu_seconds() - cpu) / took
    return {"busy_cores": busy, "requests": requests, "seconds": took}


def run(seconds: int, concurrency: int, to_docs: bool = True) -> dict[str, Any]:
    """Profile both servers; the flame graphs go to docs/flamegraphs, or with `to_docs` false
    to the run's log directory (a look that changes nothing in docs/)."""
    model_dir = ensure_tiny_model(CACHE)  # the load's tokenizer
    logdir = CACHE / "logs" / time.strftime("flames-%Y%m%dT%H%M%S")
    logdir.mkdir(parents=True, exist_ok=True)
    svg_dir = DOCS / "flamegraphs" if to_docs else logdir
    svg_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"seconds": seconds, "concurrency": concurrency}
    for name in NAMES:
        log = logdir / f"{name}.log"
        server = start_nimctl("tiny", log) if name == "nimctl" else start_vllm(log)
        raw = logdir / f"{name}.collapsed"
        try:
            load = profile(server, model_dir, seconds, concurrency, raw)
        finally:
            server.stop()
        stacks = parse_collapsed(raw.read_text())
        svg = svg_dir / f"{name}-c{concurrency}.svg"
        title = (
            f"{name} HTTP process, {concurrency} concurrent streams, py-spy {seconds} s "
            f"({sum(c for _, c in stacks)} busy samples at 200 Hz)"
        )
        svg.write_text(flame_svg(stacks, title))
        # As linked from docs/benchmarks.md (the log directory's too, for a --no-doc look).
        result[name] = {**load, **shares(stacks), "svg": os.path.relpath(svg, DOCS)}
        print(f"{name}: {result[name]['busy_cores']:.2f} cores busy", file=sys.stderr)
    return result


def report(result: dict[str, Any]) -> str:
    c = result["concurrency"]
    lines = [
        "Command: `make bench` (this part: `python -m bench.flames`). Each server alone, "
        f"warmed up, streamed chats at concurrency {c} (vLLM's `bench serve`, 128 in / 128 "
        f"out) while `py-spy record --pid <HTTP process> --rate 200 --nonblocking --threads` "
        f"samples it for {result['seconds']} s. Flame graphs: "
        f"[nimctl]({result['nimctl']['svg']}), [vLLM's server]({result['vllm']['svg']}) "
        "(open the SVG; hover for names and shares). Shares are of busy samples: waiting ones "
        "(the loop's poll, idle pool threads) are left out.",
        "",
        "| | nimctl | vLLM's server |",
        "|---|---|---|",
        f"| HTTP process busy (CPU s per s) | {result['nimctl']['busy_cores']:.2f} | "
        f"{result['vllm']['busy_cores']:.2f} |",
        f"| requests during the window | {result['nimctl']['requests']} | "
        f"{result['vllm']['requests']} |",
        f"| busy samples | {result['nimctl']['samples']} | {result['vllm']['samples']} |",
        "",
        "Self time by package (the innermost frame's package), share of busy samples:",
        "",
        "| package | nimctl | vLLM's server |",
        "|---|---|---|",
    ]
    packages = list(dict.fromkeys([*result["nimctl"]["packages"], *result["vllm"]["packages"]]))
    for package in packages:
        a = result["nimctl"]["packages"].get(package, 0.0)
        b = result["vllm"]["packages"].get(package, 0.0)
        if max(a, b) >= 0.005:
            lines.append(f"| {package} | {a:.1%} | {b:.1%} |")
    lines += [
        "",
        "nimctl's own functions, share of busy samples: inclusive (with what they call, e.g. "
        "the socket write under a `send` wrapper) and self (their own lines):",
        "",
        "| function | inclusive | self |",
        "|---|---|---|",
    ]
    for name, share, own in result["nimctl"]["nimctl"][:20]:
        lines.append(f"| `{name}` | {share:.1%} | {own:.1%} |")
    lines += [
        "",
        "Largest self shares (the innermost function), side by side:",
        "",
        "| nimctl | share | vLLM's server | share |",
        "|---|---|---|---|",
    ]
    for (a, sa), (b, sb) in zip(
        result["nimctl"]["self"][:15], result["vllm"]["self"][:15], strict=False
    ):
        lines.append(f"| `{a}` | {sa:.1%} | `{b}` | {sb:.1%} |")
    lines += [
        "",
        "Largest inclusive shares, side by side:",
        "",
        "| nimctl | share | vLLM's server | share |",
        "|---|---|---|---|",
    ]
    for (a, sa), (b, sb) in zip(
        result["nimctl"]["top"][:15], result["vllm"]["top"][:15], strict=False
    ):
        lines.append(f"| `{a}` | {sa:.1%} | `{b}` | {sb:.1%} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from bench.report import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--no-doc", action="store_true", help="print only; flame graphs to the log directory"
    )
    args = parser.parse_args(argv)
    result = run(args.seconds, args.concurrency, to_docs=not args.no_doc)
    publish(
        "profile",
        result,
        report(result),
        CACHE,
        "Where the HTTP process's CPU goes (py-spy)",
        not args.no_doc,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
