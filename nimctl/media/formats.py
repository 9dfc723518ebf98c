"""Reading media that arrives inside a request: data URLs, image formats, video facts.

Formats are judged from the bytes, never from the declared MIME type or a file name.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from dataclasses import dataclass

_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?),", re.IGNORECASE)

# Leading bytes of each image format nimctl knows (first match wins).
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)
FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WebP", "bmp": "BMP"}


@dataclass(frozen=True)
class DataUrl:
    mime: str
    base64: bool
    data: str  # the text after the comma

    def prefix_bytes(self, count: int = 32) -> bytes:
        """The first `count` decoded bytes, decoding only what that needs."""
        if not self.base64:
            return self.data[:count].encode("latin-1", "replace")
        chunk = re.sub(r"\s", "", self.data[: (count // 3 + 2) * 4 + 64])
        chunk = chunk[: len(chunk) // 4 * 4]
        try:
            return base64.b64decode(chunk, validate=True)[:count]
        except (binascii.Error, ValueError):
            return b""

    def decode(self) -> bytes:
        if not self.base64:
            return self.data.encode("latin-1", "replace")
        return base64.b64decode(re.sub(r"\s", "", self.data), validate=True)


def parse_data_url(url: str) -> DataUrl | None:
    """A `data:` URL split into its parts, or None for any other URL."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    return DataUrl(
        mime=match.group("mime").strip().lower(),
        base64="base64" in params,
        data=url[match.end() :],
    )


def sniff_image_format(head: bytes) -> str | None:
    """png, jpeg, gif, webp or bmp from the first bytes; None if none of them."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    return None


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0


def probe_video(data: bytes) -> VideoInfo | None:
    """Frame count and frame rate of a video, or None if it cannot be decoded."""
    import cv2  # a vLLM dependency; only videos need it

    fd, path = tempfile.mkstemp(suffix=".video")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        capture = cv2.VideoCapture(path)
        try:
            if not capture.isOpened():
                return None
            frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(capture.get(cv2.CAP_PROP_FPS))
        finally:
            capture.release()
    finally:
        os.unlink(path)
    if frames <= 0 or fps <= 0:
        return None
    return VideoInfo(frames=frames, fps=fps)
