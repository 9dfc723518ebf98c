"""The tiny profile as the end-to-end tests serve it: its model id, media settings and the
small request helpers several test modules use."""

from __future__ import annotations

from typing import Any

import httpx

TINY_MODEL = "nimctl/tiny-vlm"

# Media settings of the shared tiny server: the test image server is reached by the name
# "localhost" (admitted), while 127.0.0.1 itself and other names resolving to it are not; small
# caps and timeouts keep the refusal cases fast.
TINY_MEDIA_ENV = {
    "NIM_MEDIA_ALLOWLIST": "localhost",
    "NIM_MEDIA_CONNECT_TIMEOUT": "1",
    "NIM_MEDIA_READ_TIMEOUT": "1",
    "NIM_MEDIA_FETCH_TIMEOUT": "3",
    "NIM_MEDIA_MAX_IMAGE_BYTES": str(2 * 2**20),
}


def sse_events(text: str) -> list[str]:
    return [e.removeprefix("data: ") for e in text.split("\n\n") if e.strip()]


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def ask(server: Any, *parts: dict[str, Any], **extra: Any) -> httpx.Response:
    """A two-token question about the given image parts, to the tiny model."""
    content = [{"type": "text", "text": "What is in this image?"}, *parts]
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={
            "model": TINY_MODEL,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 2,
            **extra,
        },
        timeout=60,
    )
