"""Where the time of one request goes, stage by stage, in nimctl and in vLLM's server.

Each server runs under `bench.stages_launch` (timing wrappers on the request path, see there),
alone, and gets sequential streamed chat requests on one kept-alive connection: text-only, then
with five base64 1-megapixel PNGs. The medians of each stage's duration are printed side by
side and written to docs/benchmarks.md, so that a step nimctl adds, or makes slower than vLLM's
server does, shows as its own row with its microseconds.

Run: `python -m bench.stages [--requests N]` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.rawhttp import Connection, Exchange, chat_body, encode_request
from bench.servers import CACHE, MODEL, Running, start_nimctl, start_vllm
from bench.serving import IMAGE_COUNT, KEEPALIVE_PROMPT, images_body

LAUNCHER = ("bench.stages_launch",)
NAMES = ("nimctl", "vllm")
TEXT_TOKENS = 16
# (label, start mark, end mark); None when a stage is computed (see `durations`).
STAGES: tuple[tuple[str, str | None, str | None], ...] = (
    ("client send to first bytes read by the server", None, None),
    ("first bytes read to ASGI entry (HTTP parsing, task start)", None, None),
    ("ASGI entry to route code (middleware, routing)", None, None),
    ("body read", "body_start", "body_end"),
    ("JSON parse", "json_start", "json_end"),
    ("request parse (ChatCompletionRequest)", "validate_start", "validate_end"),
    ("guards (nimctl)", "guards_start", "guards_end"),
    ("media intake (nimctl)", "intake_start", "intake_end"),
    ("render: all (render_chat_request)", "render_start", "render_end"),
    ("render: parse messages, load media", "mmparse_start", "mmparse_end"),
    ("render: chat template", None, None),
    ("render: tokenise", "tokenize_start", "tokenize_end"),
    ("render: multimodal processing", "process_start", "process_end"),
    ("from render to engine submit", "render_end", "submit_start"),
    ("engine submit (AsyncLLM.add_request)", "submit_start", "submit_end"),
    ("engine submit to first engine output", "submit_end", "generate_first"),
    ("first engine output to first SSE byte", "generate_first", "first_body"),
    ("ASGI entry to response head", "asgi", "head"),
    ("ASGI entry to engine submit", "asgi", "submit_start"),
    ("ASGI entry to first SSE byte", "asgi", "first_body"),
    ("response head: server send to client", None, None),
    ("first SSE byte: server send to client", None, None),
)


def durations(marks: dict[str, float], exchange: Exchange | None = None) -> dict[str, float]:
    """Each stage's duration in µs for one request (stages it did not pass are absent).

    Server marks are µs from the ASGI entry, plus `asgi_abs`, the entry's perf_counter: one
    clock for all processes, so the client's time stamps give the hops over the socket.
    """
    out: dict[str, float] = {}
    if "arrived" in marks and marks["arrived"] < 0:
        out[STAGES[1][0]] = -marks["arrived"]
    if exchange is not None and "asgi_abs" in marks:
        origin = marks["asgi_abs"]
        if "arrived" in marks and marks["arrived"] < 0:
            out[STAGES[0][0]] = (origin + marks["arrived"] / 1e6 - exchange.sent) * 1e6
        if "head" in marks:
            out["response head: server send to client"] = (
                exchange.head - origin - marks["head"] / 1e6
            ) * 1e6
        if "first_body" in marks and exchange.first_body is not None:
            out["first SSE byte: server send to client"] = (
                exchange.first_body - origin - marks["first_body"] / 1e6
            ) * 1e6
    for label, start, end in STAGES:
        if start is not None and end is not None and start in marks and end in marks:
            out[label] = marks[end] - marks[start]
    entered = [marks[k] for k in ("body_start", "endpoint_start") if k in marks]
    if entered:
        out[STAGES[2][0]] = min(entered) - marks["asgi"]
    if "messages_start" in marks and "mmparse_start" in marks:
        out["render: chat template"] = (marks["messages_end"] - marks["messages_start"]) - (
            marks["mmparse_end"] - marks["mmparse_start"]
        )
    return out


def read_marks(path: Path, skip: int) -> list[dict[str, float]]:
    import json

    lines = path.read_text().splitlines()[skip:]
    return [json.loads(line) for line in lines if line.strip()]


def block(
    server: Running, path: Path, request: bytes, count: int
) -> tuple[list[dict[str, float]], list[Exchange]]:
    """`count` requests one after the other on one kept-alive connection, and their records."""
    with Connection(server.port) as connection:
        connection.exchange(request, sse=True)  # this connection's first request: not counted
        time.sleep(0.2)  # let its line land
        skip = len(path.read_text().splitlines())
        exchanges = [connection.exchange(request, sse=True) for _ in range(count)]
    bad = [x for x in exchanges if x.status != 200 or x.first_content is None]
    if bad:
        raise RuntimeError(f"{server.name}: {bad[0].status} {bad[0].body[:300]!r}")
    for _ in range(50):  # the line is written when the response is complete: wait for it
        marks = read_marks(path, skip)
        if len(marks) >= count:
            return [durations(m, x) for m, x in zip(marks, exchanges, strict=False)], exchanges
        time.sleep(0.1)
    raise RuntimeError(f"{server.name}: {len(marks)} records for {count} requests")


def summary(records: list[dict[str, float]], exchanges: list[Exchange]) -> dict[str, Any]:
    return {
        "stages_us": {
            label: statistics.median(r[label] for r in records)
            for label, _, _ in STAGES
            if all(label in r for r in records)
        },
        "client_ttft_ms": statistics.median(x.ms(x.first_content) for x in exchanges),
        "client_head_ms": statistics.median(x.ms(x.head) for x in exchanges),
        "requests": len(exchanges),
    }


def run(rounds: int, text: int, images: int) -> dict[str, Any]:
    """Both servers started once; in each round each one runs a block of text-only and a
    block of image requests while the other is paused, so that both see the same machine."""
    logdir = CACHE / "logs" / time.strftime("stages-%Y%m%dT%H%M%S")
    logdir.mkdir(parents=True, exist_ok=True)
    kinds = {
        "text": chat_body(KEEPALIVE_PROMPT, TEXT_TOKENS, True, MODEL),
        "images": images_body(True),
    }
    collected: dict[str, dict[str, tuple[list[Any], list[Any]]]] = {
        n: {k: ([], []) for k in kinds} for n in NAMES
    }
    servers: dict[str, Running] = {}
    paths: dict[str, Path] = {}
    try:
        for name in NAMES:
            paths[name] = logdir / f"{name}-stages.jsonl"
            paths[name].write_text("")
            env = {"BENCH_STAGES_FILE": str(paths[name])}
            log = logdir / f"{name}.log"
            if name == "nimctl":
                servers[name] = start_nimctl("tiny", log, env, launcher=LAUNCHER)
            else:
                servers[name] = start_vllm(log, LAUNCHER, env=env)
            servers[name].pause()
        for round_ in range(rounds):
            for name in NAMES:
                with servers[name].turn() as server:
                    for kind, body in kinds.items():
                        request = encode_request("POST", "/v1/chat/completions", server.port, body)
                        count = text if kind == "text" else images
                        records, exchanges = block(server, paths[name], request, count)
                        collected[name][kind][0].extend(records)
                        collected[name][kind][1].extend(exchanges)
            print(f"stages: round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    result: dict[str, Any] = {
        "rounds": rounds,
        "text_requests": rounds * text,
        "image_requests": rounds * images,
    }
    for name in NAMES:
        result[name] = {k: summary(*collected[name][k]) for k in kinds}
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        "Command: `make bench` (this part: `python -m bench.stages`). Both servers run under "
        "`bench/stages_launch.py`, which wraps the functions of the chat request path with "
        "timers before the normal entry point starts; they take turns, each alone (the other "
        f"paused), in {result['rounds']} rounds, for "
        f"{result['text_requests']} text-only streamed requests ({TEXT_TOKENS} tokens) and "
        f"{result['image_requests']} streamed requests with {IMAGE_COUNT} base64 1-megapixel "
        "noise PNGs, one at a time on one kept-alive connection. Medians in µs, server-side "
        "wall time (the engine's own steps included where they are on the path).",
        "",
        "| stage | text: nimctl | text: vLLM | text: A-B | 5 images: nimctl | 5 images: vLLM "
        "| 5 images: A-B |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(kind: str, name: str, label: str) -> str:
        value = result[name][kind]["stages_us"].get(label)
        return "-" if value is None else f"{value:,.0f}"

    def diff(kind: str, label: str) -> str:
        a = result["nimctl"][kind]["stages_us"].get(label)
        b = result["vllm"][kind]["stages_us"].get(label)
        if a is None and b is None:
            return ""
        return f"{(a or 0) - (b or 0):+,.0f}"

    for label, _, _ in STAGES:
        lines.append(
            f"| {label} | {cell('text', 'nimctl', label)} | {cell('text', 'vllm', label)} | "
            f"{diff('text', label)} | {cell('images', 'nimctl', label)} | "
            f"{cell('images', 'vllm', label)} | {diff('images', label)} |"
        )
    for key, title in (("client_head_ms", "client: response head"), ("client_ttft_ms", "TTFT")):
        values = [f"{result[n][k][key]:.1f} ms" for k in ("text", "images") for n in NAMES]
        lines.append(
            f"| {title} (client side) | {values[0]} | {values[1]} | | {values[2]} | {values[3]} | |"
        )
    lines += [
        "",
        "Stages are the first call of each wrapped function in the request: body read "
        "(Starlette `Request.body`), JSON parse (nimctl's `parse_json_object`; vLLM: "
        "`Request.json`), request parse (nimctl's `VllmEngine.parse_chat_request`; vLLM: "
        "FastAPI's `solve_dependencies`, where the body becomes a `ChatCompletionRequest`), "
        "guards (`check_request`), intake (`MediaIntake.resolve`), render "
        "(`OpenAIServingChat.render_chat_request`, with `parse_chat_messages_async`, "
        "`HfRenderer.render_messages_async` minus the former = chat template, "
        "`tokenize_prompts_async`, `process_for_engine_async`), engine submit "
        "(`AsyncLLM.add_request`), first engine output (first item of `AsyncLLM.generate`), "
        "first SSE byte (first non-empty `http.response.body` sent).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from bench.report import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=10, help="text-only, per round")
    parser.add_argument("--image-requests", type=int, default=3, help="per round")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.rounds, args.requests, args.image_requests)
    publish(
        "stages",
        result,
        report(result),
        CACHE,
        "Where the time of one request goes",
        not args.no_doc,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
