"""Per-request steps nimctl adds or does differently, timed in-process against vLLM's own.

The stage timer (bench.stages) measures steps inside the running servers, in wall time, on a
shared machine. This measures the steps nimctl runs where vLLM's server runs something else,
on the same inputs, in one process, many times, as CPU time (all threads): the figures that
say what a step costs and what replacing it would save.

- JSON: nimctl's strict `parse_json_object` (msgspec) against `json.loads` (what Starlette's
  `Request.json` does for vLLM's server), for a text request and the five-image request;
- guards: `check_request` (vLLM's server has none);
- images: nimctl's media intake (`MediaIntake.resolve`: base64, checks, decode on worker
  threads) against vLLM's own loading of the same data URLs (`ImageMediaIO.load_base64`:
  pybase64, Pillow, as its chat layer does), and base64 alone (stdlib against pybase64);
- multimodal hashing: vLLM hashes every image for its processor cache. Its own loader hands
  the hasher the encoded bytes (`MediaWithBytes`); nimctl hands it a decoded Pillow image,
  whose pixels are hashed instead.

Run: `python -m bench.hotspots [--repeat N]` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.rawhttp import chat_body
from bench.servers import CACHE, MODEL
from bench.serving import IMAGE_COUNT, KEEPALIVE_PROMPT, images_body

# The images' cache-key hash: the engine's default (`VllmEngine.media_hash`).
HASH = "blake3"


def timed(work: Callable[..., Any], repeat: int, prepare: Callable[[], Any] | None = None) -> dict:
    """Median CPU time (process-wide: worker threads count) and wall time, in µs."""
    cpu, wall = [], []
    for _ in range(repeat):
        argument = prepare() if prepare is not None else None
        c0, w0 = time.process_time(), time.perf_counter()
        work() if argument is None else work(argument)  # type: ignore[call-arg]
        cpu.append((time.process_time() - c0) * 1e6)
        wall.append((time.perf_counter() - w0) * 1e6)
    return {"cpu_us": statistics.median(cpu), "wall_us": statistics.median(wall)}


def nimctl_base64_decoder() -> tuple[Callable[[str], bytes], str]:
    """The decoder nimctl's intake uses now (it has changed), for the side-by-side row."""
    import nimctl.media.intake as intake

    sliced = getattr(intake, "b64decode_sliced", None)
    if sliced is not None:
        library = "pybase64" if "pybase64" in vars(intake) else "stdlib `base64`"
        return sliced, f"`b64decode_sliced` ({library}, in slices)"
    return (lambda text: base64.b64decode(text, validate=True)), "stdlib `base64.b64decode`"


def run(repeat: int) -> dict[str, Any]:
    import pybase64
    from vllm.multimodal.hasher import MultiModalHasher
    from vllm.multimodal.media.base import MediaWithBytes
    from vllm.multimodal.media.image import ImageMediaIO

    from nimctl.api.json_body import parse_json_object
    from nimctl.guards import check_request
    from nimctl.media.intake import MediaIntake
    from nimctl.profiles import ProfileStore, builtin_profiles_dir
    from nimctl.settings import NimSettings

    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    text = chat_body(KEEPALIVE_PROMPT, 64, True, MODEL)
    images = images_body(True)
    image_payload = json.loads(images)
    urls = [
        part["image_url"]["url"]
        for part in image_payload["messages"][0]["content"]
        if part.get("type") == "image_url"
    ]
    encoded = [url.split(",", 1)[1] for url in urls]
    few = max(3, repeat // 5)  # the heavy steps
    out: dict[str, Any] = {"repeat": repeat, "heavy_repeat": few, "rows": []}

    def row(step: str, kind: str, nimctl: dict | None, vllm: dict | None, note: str) -> None:
        out["rows"].append(
            {"step": step, "kind": kind, "nimctl": nimctl, "vllm": vllm, "note": note}
        )

    row(
        "JSON parse",
        "text",
        timed(lambda: parse_json_object(text), repeat),
        timed(lambda: json.loads(text), repeat),
        "nimctl: msgspec from the bytes, and a walk of the containers for wide integers",
    )
    row(
        "JSON parse",
        "5 images",
        timed(lambda: parse_json_object(images), few),
        timed(lambda: json.loads(images), few),
        "20 MB of JSON, mostly base64 strings",
    )
    text_payload = json.loads(text)
    row(
        "guards (check_request)",
        "text",
        timed(lambda p: check_request(p, profile), repeat, lambda: copy.deepcopy(text_payload)),
        None,
        "vLLM's server has none",
    )
    row(
        "guards (check_request)",
        "5 images",
        timed(lambda p: check_request(p, profile), few, lambda: copy.deepcopy(image_payload)),
        None,
        "",
    )

    settings = NimSettings()
    loop = asyncio.new_event_loop()
    intake = MediaIntake.from_settings(settings)
    try:
        row(
            "image intake / vLLM's image loading",
            "5 images",
            timed(
                lambda p: loop.run_until_complete(intake.resolve(p, profile, HASH)),
                few,
                lambda: copy.deepcopy(image_payload),
            ),
            timed(
                lambda: [ImageMediaIO().load_base64("image/png", e) for e in encoded],
                few,
            ),
            "nimctl: base64, checks and decode on worker threads; vLLM: pybase64 and decode, "
            "one after the other",
        )
    finally:
        loop.run_until_complete(intake.aclose())
        loop.close()
    decoder, name = nimctl_base64_decoder()
    row(
        "base64 decode alone",
        "5 images",
        timed(lambda: [decoder(e) for e in encoded], few),
        timed(lambda: [pybase64.b64decode(e, validate=True) for e in encoded], few),
        f"nimctl: {name}; vLLM: `pybase64.b64decode` (SIMD)",
    )
    decoded = [ImageMediaIO().load_base64("image/png", e) for e in encoded]
    pil = [item.media for item in decoded]

    def hash_all(items: list[Any]) -> None:
        for item in items:
            MultiModalHasher.hash_kwargs("blake3", model_id=MODEL, image=item)

    row(
        "processor-cache hash of the images",
        "5 images",
        timed(lambda: hash_all(pil), few),
        timed(lambda: hash_all([MediaWithBytes(i.media, i.original_bytes) for i in decoded]), few),
        "nimctl's decoded Pillow image: its pixels are hashed; vLLM's own: the PNG bytes",
    )
    return out


def report(result: dict[str, Any]) -> str:
    lines = [
        "Command: `make bench` (this part: `python -m bench.hotspots`): in one process, median "
        f"of {result['repeat']} runs ({result['heavy_repeat']} for the image steps), CPU time "
        "of all threads and wall time, µs. The inputs are the benchmark's own: the text request "
        f"and the request with {IMAGE_COUNT} base64 1-megapixel noise PNGs.",
        "",
        "| step | request | nimctl CPU | nimctl wall | vLLM's server CPU | vLLM's server wall "
        "| nimctl - vLLM, CPU | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        a, b = row["nimctl"], row["vllm"]
        diff = a["cpu_us"] - (b["cpu_us"] if b else 0.0)
        cells = [f"{a['cpu_us']:,.0f}", f"{a['wall_us']:,.0f}"]
        cells += [f"{b['cpu_us']:,.0f}", f"{b['wall_us']:,.0f}"] if b else ["-", "-"]
        lines.append(
            f"| {row['step']} | {row['kind']} | {' | '.join(cells)} | {diff:+,.0f} | "
            f"{row['note']} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from bench.report import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.repeat)
    publish(
        "hotspots",
        result,
        report(result),
        CACHE,
        "Steps nimctl does differently, timed in-process",
        not args.no_doc,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
