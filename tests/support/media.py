"""Media made by the tests themselves (no files, no network)."""

from __future__ import annotations

import base64
import io
import os
import struct
import tempfile
import zlib

from PIL import Image

MIME = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (48, 32), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def image_data_url(fmt: str = "PNG", size: tuple[int, int] = (48, 32), color: str = "red") -> str:
    encoded = base64.b64encode(image_bytes(fmt, size, color)).decode()
    return f"data:image/{MIME[fmt]};base64,{encoded}"


def video_bytes(frames: int = 25, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> bytes:
    import cv2
    import numpy as np

    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        for i in range(frames):
            writer.write(np.full((size[1], size[0], 3), (i * 10) % 256, np.uint8))
        writer.release()
        with open(path, "rb") as handle:
            return handle.read()
    finally:
        os.unlink(path)


def video_data_url(frames: int = 25, fps: float = 10.0) -> str:
    return f"data:video/mp4;base64,{base64.b64encode(video_bytes(frames, fps)).decode()}"


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header announcing a huge image, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
        + chunk(b"IEND", b"")
    )
