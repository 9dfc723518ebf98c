"""Shared facts about media: data: URLs, format names, and what a video file holds."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?),", re.IGNORECASE)
FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WebP", "bmp": "BMP"}


@dataclass(frozen=True)
class DataUrl:
    mime: str
    base64: bool
    data: str  # the text after the comma


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


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float


def probe_video(data: bytes) -> VideoInfo | None:
    """Frame count and frame rate of a video, or None if it cannot be decoded.

    OpenCV reads only from files, so the bytes go through a private temporary file.
    """
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
