"""Media intake benchmark: five 1-megapixel PNGs, by base64 and by URL.

1. In-process: nimctl's intake (resolve, check, decode) against the decoding the engine would do
   itself with the same five images (base64 for data: URLs, then Pillow); the difference is what
   intake adds. Intake hands vLLM the decoded images, so vLLM does not repeat that work.
2. End to end: the same request to `nimctl serve` and to vLLM's own OpenAI server on the same
   tiny model and engine arguments, alternating A B A B so machine noise hits both.

Run with `make bench` (or `python -m bench.intake`); prints JSON and returns the result.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.servers import MODEL, start_nimctl, start_vllm
from nimctl.allowlist import parse_allowlist
from nimctl.media.fetch import FetchPolicy, MediaFetcher
from nimctl.media.intake import MediaIntake, MediaLimits
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from tests.support.image_server import ImageServer

IMAGES = 5
ROUNDS = 15

# The images' cache-key hash: the engine's default (`VllmEngine.media_hash`).
HASH = "blake3"


def photo_like_png(seed: int) -> bytes:
    """1000 x 1000 RGB: smooth gradients with mild noise, so PNG compresses as a photo might."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:1000, 0:1000]
    base = np.stack([(x * 0.25 + seed * 20) % 256, (y * 0.25) % 256, ((x + y) * 0.125) % 256], -1)
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def payload(urls: list[str]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "Describe these images."}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"model": MODEL, "messages": [{"role": "user", "content": parts}], "max_tokens": 1}


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def decode_once(pngs: list[bytes], data_urls: list[str] | None) -> None:
    """What the engine does itself with these images: base64 (for data: URLs), then Pillow."""
    if data_urls is not None:
        pngs = [base64.b64decode(u.split(",", 1)[1]) for u in data_urls]
    for png in pngs:
        Image.open(io.BytesIO(png)).load()


async def intake_costs(pngs: list[bytes], urls: list[str]) -> dict[str, Any]:
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    hosts, networks = parse_allowlist("localhost")
    intake = MediaIntake(
        MediaFetcher(FetchPolicy(allowed_hosts=hosts, allowed_networks=networks)),
        MediaLimits(max_image_bytes=20 * 2**20, max_image_pixels=25_000_000, max_video_bytes=2**20),
    )
    data_urls = [data_url(p) for p in pngs]
    results: dict[str, Any] = {}
    try:
        for name, sources in (("base64", data_urls), ("url", urls)):
            await intake.resolve(payload(sources), profile, HASH)  # warm-up (connections, imports)
            times, decode_times = [], []
            for _ in range(ROUNDS):
                body = payload(sources)
                start = time.perf_counter()
                await intake.resolve(body, profile, HASH)
                times.append(time.perf_counter() - start)
                start = time.perf_counter()
                decode_once(pngs, data_urls if name == "base64" else None)
                decode_times.append(time.perf_counter() - start)
            tracemalloc.start()
            await intake.resolve(payload(sources), profile, HASH)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            results[name] = {
                "intake_ms_median": round(statistics.median(times) * 1000, 1),
                "decode_only_ms_median": round(statistics.median(decode_times) * 1000, 1),
                "added_ms_median": round(
                    (statistics.median(times) - statistics.median(decode_times)) * 1000, 1
                ),
                "python_peak_mib": round(peak / 2**20, 1),
            }
    finally:
        await intake.aclose()
    return results


def end_to_end(pngs: list[bytes], images: ImageServer, logs: Path) -> dict[str, Any]:
    nimctl = start_nimctl("tiny", logs / "nimctl.log", {"NIM_MEDIA_ALLOWLIST": "localhost"})
    vllm = None
    try:
        vllm = start_vllm(logs / "vllm.log")
        url_sources = [f"http://localhost:{images.port}/{i}.png" for i in range(IMAGES)]
        cases = {"base64": payload([data_url(p) for p in pngs]), "url": payload(url_sources)}
        out: dict[str, Any] = {}
        with httpx.Client(timeout=120) as client:
            for name, body in cases.items():
                samples: dict[str, list[float]] = {"nimctl": [], "vllm": []}
                tokens = {}
                for round_ in range(ROUNDS + 1):
                    for server in (nimctl, vllm):
                        start = time.perf_counter()
                        response = client.post(f"{server.base_url}/v1/chat/completions", json=body)
                        elapsed = time.perf_counter() - start
                        response.raise_for_status()
                        tokens[server.name] = response.json()["usage"]["prompt_tokens"]
                        if round_:  # the first round warms both up
                            samples[server.name].append(elapsed)
                ratios = [a / b for a, b in zip(samples["nimctl"], samples["vllm"], strict=True)]
                out[name] = {
                    "nimctl_ms_median": round(statistics.median(samples["nimctl"]) * 1000, 1),
                    "vllm_ms_median": round(statistics.median(samples["vllm"]) * 1000, 1),
                    "ratio_median": round(statistics.median(ratios), 3),
                    "prompt_tokens": tokens,
                }
        return out
    finally:
        nimctl.stop()
        if vllm is not None:
            vllm.stop()


def run() -> dict[str, Any]:
    pngs = [photo_like_png(seed) for seed in range(IMAGES)]
    with ImageServer() as images, tempfile.TemporaryDirectory() as logs:
        for i, png in enumerate(pngs):
            images.route(f"/{i}.png", png, content_type="image/png")
        urls = [f"http://localhost:{images.port}/{i}.png" for i in range(IMAGES)]
        result = {
            "images": IMAGES,
            "png_bytes_each": [len(p) for p in pngs],
            "rounds": ROUNDS,
            "intake": asyncio.run(intake_costs(pngs, urls)),
            "end_to_end": end_to_end(pngs, images, Path(logs)),
        }
    return result


def report(result: dict[str, Any]) -> str:
    intake, e2e = result["intake"], result["end_to_end"]
    sizes = ", ".join(f"{b / 2**20:.2f}" for b in result["png_bytes_each"])
    lines = [
        "Command: `make bench` (this part: `python -m bench.intake`).",
        "",
        f"A request with {result['images']} PNGs of 1000 x 1000 pixels (photo-like, {sizes} MiB "
        f"each), `max_tokens` 1, {result['rounds']} rounds after a warm-up.",
        "",
        "**Intake in-process** (nimctl's media step alone), against the decoding the engine "
        "would do itself with the same images (base64 for data: URLs, then Pillow, one image "
        "after the other). Intake does that decoding, on worker threads, and hands vLLM the "
        "decoded images, so vLLM repeats none of it: nothing is decoded or base64-encoded "
        "twice.",
        "",
        "| source | intake, median ms | engine's own decode, median ms | intake minus decode, ms "
        "| Python peak during intake, MiB |",
        "|---|---|---|---|---|",
    ]
    for name, row in intake.items():
        lines.append(
            f"| {name} | {row['intake_ms_median']} | {row['decode_only_ms_median']} | "
            f"{row['added_ms_median']} | {row['python_peak_mib']} |"
        )
    lines += [
        "",
        "The Python peak counts Python allocations (the request's base64 text and decoded "
        "bytes); Pillow's pixel buffers (3 MB per megapixel image) come on top and are the "
        "memory the engine needs anyway.",
        "",
        "**End to end**, the same request to `nimctl serve --profile tiny` (A) and to vLLM's "
        "own OpenAI server (B) on the same generated model and engine arguments, alternating:",
        "",
        "| source | nimctl, median ms | vLLM server, median ms | per-round ratio A/B, median "
        "| prompt tokens A / B |",
        "|---|---|---|---|---|",
    ]
    for name, row in e2e.items():
        tokens = row["prompt_tokens"]
        lines.append(
            f"| {name} | {row['nimctl_ms_median']} | {row['vllm_ms_median']} | "
            f"{row['ratio_median']} | {tokens['nimctl']} / {tokens['vllm']} |"
        )
    lines += [
        "",
        "For URLs, vLLM's server fetches the images itself, with no address checks; nimctl "
        "fetches them with its SSRF checks, byte caps and retries.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    from bench.report import write_section

    outcome = run()
    json.dump(outcome, sys.stdout, indent=2)
    print()
    write_section("intake", "Media intake: five 1-megapixel PNGs", report(outcome))
