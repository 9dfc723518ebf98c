"""Images: judged from their bytes, bounded in pixels, decoded once.

The decode done here is the one the engine would otherwise do itself: the loaded Pillow image is
what vLLM receives, so no image is decoded twice on its way to the model.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from nimctl.media.formats import FORMAT_NAMES

# Pillow format name -> nimctl's format name (MPO is a multi-picture JPEG).
_PIL_FORMATS = {
    "PNG": "png",
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
}
_MIME_TYPES = {
    "png": {"image/png"},
    "jpeg": {"image/jpeg", "image/jpg", "image/pjpeg"},
    "gif": {"image/gif"},
    "webp": {"image/webp"},
    "bmp": {"image/bmp", "image/x-bmp", "image/x-ms-bmp"},
}


class ImageProblem(Exception):
    """Why an image cannot be used; `reason` is a stable code."""

    def __init__(self, reason: str, problem: str, fix: str, found: str | None = None) -> None:
        super().__init__(problem)
        self.reason = reason
        self.problem = problem
        self.fix = fix
        self.found = found


def load_image(
    data: bytes,
    *,
    formats: tuple[str, ...],
    max_pixels: int,
    declared_mime: str | None = None,
) -> Image.Image:
    """Open, check and fully decode an image.

    Animated images (GIF, WebP) are used by their first frame, as an image model sees one
    picture; the rest of the animation is not decoded.
    """
    accepted = ", ".join(FORMAT_NAMES[f] for f in formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageProblem(
            "too_many_pixels",
            "The image has too many pixels.",
            f"Send at most {max_pixels:,} pixels.",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ImageProblem(
            "not_an_image", "The data is not an image nimctl can read.", f"Send one of: {accepted}."
        ) from None
    found = _PIL_FORMATS.get(image.format or "")
    if found is None or found not in formats:
        name = FORMAT_NAMES.get(found or "", image.format or "unknown")
        raise ImageProblem(
            "image_format",
            f"It is a {name} image.",
            f"Convert it to one of: {accepted}.",
            found=found or image.format,
        )
    if declared_mime and declared_mime not in _MIME_TYPES[found]:
        raise ImageProblem(
            "mime_mismatch",
            f"It is declared as {declared_mime} but its bytes are {FORMAT_NAMES[found]}.",
            f"Declare it as image/{found}, or send the image the type names.",
        )
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise ImageProblem(
            "too_many_pixels",
            f"It is {width} x {height} pixels ({width * height:,}).",
            f"Send at most {max_pixels:,} pixels (NIM_MEDIA_MAX_IMAGE_PIXELS).",
        )
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        image.load()
    except (OSError, ValueError, EOFError, SyntaxError):
        raise ImageProblem(
            "corrupt", "The image data is truncated or corrupt.", "Send the complete file."
        ) from None
    return image
