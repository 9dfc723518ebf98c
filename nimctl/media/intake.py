"""The one media step of the chat path: every image and video a request carries is resolved to
bytes, checked, and handed to vLLM in a form it will not fetch or decode again.

- Images become loaded Pillow images (`image_pil` parts, which vLLM's chat layer takes as they
  are): base64 is decoded once, the image is decoded once, nothing is re-encoded. With a Mistral
  tokenizer, which renders the request's own parts, they become data: URLs of the checked bytes.
- Videos stay `video_url` parts with a `data:` URL (the client's own, or one made from fetched
  bytes), after their container, size, frame count and frame rate have been checked.

Fetching is the fetcher's job (SSRF-safe, bounded, retried); decoding runs on worker threads so
the event loop keeps serving. A client's mistake always ends as a 400 that names the content part
and the reason.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

import pybase64
from blake3 import blake3

from nimctl.errors import Refusal
from nimctl.guards.base import Content, GuardError, classify, part_url
from nimctl.media.fetch import FetchError, FetchPolicy, MediaFetcher
from nimctl.media.formats import FORMAT_NAMES, DataUrl, VideoInfo, parse_data_url
from nimctl.media.images import ImageProblem, load_image
from nimctl.media.report import MediaItemReport, MediaReport
from nimctl.media.video import VideoProblem, container_of, inspect_video
from nimctl.profiles import Profile
from nimctl.settings import NimSettings

_WHITESPACE = re.compile(r"[\s]+")
_VIDEO_MIME = {
    "MP4/MOV/3GP": "video/mp4",
    "Matroska/WebM": "video/webm",
    "FLV": "video/x-flv",
    "AVI": "video/x-msvideo",
}


class MediaError(Refusal):
    """A content part whose media cannot be used: 400, naming the part and the reason."""

    kind = "media"

    def __init__(self, where: str, reason: str, problem: str, fix: str) -> None:
        text = f"{problem} {fix}".strip()
        super().__init__(reason, f"{where}: {text} (reason: {reason})", fix, param=where)


@dataclass(frozen=True)
class MediaLimits:
    max_image_bytes: int
    max_image_pixels: int
    max_video_bytes: int


@dataclass
class _Item:
    where: str
    kind: str  # "image" or "video"
    part: dict[str, Any]
    url: str
    data_url: DataUrl | None  # parsed once: the text may be megabytes
    report: MediaItemReport


class MediaIntake:
    def __init__(self, fetcher: MediaFetcher, limits: MediaLimits) -> None:
        self._fetcher = fetcher
        self._limits = limits

    @classmethod
    def from_settings(cls, settings: NimSettings) -> MediaIntake:
        hosts, networks = settings.media_allow
        policy = FetchPolicy(
            allowed_hosts=hosts,
            allowed_networks=networks,
            local_root=settings.media_local_path,
            url_fetching=settings.media_url_fetching,
            connect_timeout_s=settings.media_connect_timeout,
            read_timeout_s=settings.media_read_timeout,
            total_timeout_s=settings.media_fetch_timeout,
            max_redirects=settings.media_max_redirects,
            retries=settings.media_fetch_retries,
            max_concurrent=settings.media_max_concurrent_fetches,
        )
        limits = MediaLimits(
            max_image_bytes=settings.media_max_image_bytes,
            max_image_pixels=settings.media_max_image_pixels,
            max_video_bytes=settings.media_max_video_bytes,
        )
        return cls(MediaFetcher(policy), limits)

    async def aclose(self) -> None:
        await self._fetcher.aclose()

    async def resolve(
        self,
        payload: dict[str, Any],
        profile: Profile,
        hash_name: str,
        content: Content | None = None,
    ) -> MediaReport | None:
        """Fetch, check and replace every media part; `hash_name` is the engine's multimodal
        cache hash (`Engine.media_hash`), which the images' cache uuids are made with; `content`
        is the guards' classification of the request (taken here when not given). The report
        says what it took (None: the request has no media)."""
        items = _collect(content if content is not None else classify(payload))
        if not items:
            return None
        results = await asyncio.gather(
            *(self._take(item, profile, hash_name) for item in items), return_exceptions=True
        )
        _raise_first(results)
        infos = [r for r in results if isinstance(r, VideoInfo)]
        if infos:
            _check_sampling(payload, infos)
        return MediaReport([item.report for item in items])

    async def _take(self, item: _Item, profile: Profile, hash_name: str) -> VideoInfo | None:
        """Each part goes on to decoding as soon as its own bytes are in."""
        report = item.report
        report.fetch_start_ns = time.time_ns()
        blob = await self._bytes_of(item)
        report.fetch_end_ns = report.decode_start_ns = time.time_ns()
        info = await asyncio.to_thread(self._check, item, blob, profile, hash_name)
        report.decode_end_ns = time.time_ns()  # thread hand-offs included: the request waits
        return info

    async def _bytes_of(self, item: _Item) -> bytes | None:
        """Fetched bytes of a remote part; None for a data: URL, decoded later off the loop."""
        limit = self._limit(item)
        data_url = item.data_url
        if data_url is None:
            try:
                return await self._fetcher.fetch(item.url, limit)
            except FetchError as exc:  # its message already says what to do
                message = exc.message[:1].upper() + exc.message[1:].rstrip(".") + "."
                raise MediaError(item.where, exc.reason, message, "") from None
        if not data_url.base64:
            raise MediaError(
                item.where,
                "data_url",
                "A data: URL without ;base64 is not accepted for media.",
                "Send data:<type>;base64,<data>.",
            )
        if not data_url.mime.startswith(f"{item.kind}/"):
            raise MediaError(
                item.where,
                "mime_type",
                f"The data: URL declares {data_url.mime or 'no type'!r}.",
                f"Declare a {item.kind}/... type matching the data.",
            )
        if len(data_url.data) // 4 * 3 > limit + 3 + len(data_url.data) // 60:
            # Measured before decoding (whitespace, as in wrapped base64, allowed for).
            raise MediaError(
                item.where,
                "too_large",
                f"The {item.kind} is larger than {limit:,} bytes.",
                f"Send a smaller {item.kind} (NIM_MEDIA_MAX_{item.kind.upper()}_BYTES).",
            )
        return None

    def _limit(self, item: _Item) -> int:
        return (
            self._limits.max_image_bytes if item.kind == "image" else self._limits.max_video_bytes
        )

    def _decode_base64(self, item: _Item, text: str) -> bytes:
        try:
            data = b64decode_sliced(text)
        except (binascii.Error, ValueError):
            if not _WHITESPACE.search(text):
                raise MediaError(
                    item.where,
                    "base64",
                    "The data: URL is not valid base64.",
                    "Encode the bytes with standard base64 (A-Z, a-z, 0-9, +, /, =).",
                ) from None
            # Wrapped base64 (the `base64` command's output): decode without the whitespace.
            return self._decode_base64(item, "".join(text.split()))
        if len(data) > self._limit(item):
            raise MediaError(
                item.where,
                "too_large",
                f"The {item.kind} is larger than {self._limit(item):,} bytes.",
                f"Send a smaller {item.kind} (NIM_MEDIA_MAX_{item.kind.upper()}_BYTES).",
            )
        return data

    def _check(
        self, item: _Item, blob: bytes | None, profile: Profile, hash_name: str
    ) -> VideoInfo | None:
        """Runs on a worker thread: decoding is CPU work the event loop must not wait for."""
        data_url = item.data_url
        declared = data_url.mime if data_url is not None else None
        if blob is None:
            assert data_url is not None
            blob = self._decode_base64(item, data_url.data)
        item.report.bytes = len(blob)
        if item.kind == "image":
            try:
                image = load_image(
                    blob,
                    formats=profile.image_formats,
                    max_pixels=self._limits.max_image_pixels,
                    declared_mime=declared,
                )
            except ImageProblem as exc:
                if exc.reason == "image_format":
                    accepted = ", ".join(FORMAT_NAMES[f] for f in profile.image_formats)
                    found = FORMAT_NAMES.get(exc.found or "", exc.found or "unknown")
                    raise GuardError(
                        "image_formats",
                        f"{item.where} is a {found} image; {profile.served_model_name} accepts "
                        f"{accepted}.",
                        f"Convert the image to one of: {accepted}.",
                        item.where,
                    ) from None
                raise MediaError(item.where, exc.reason, exc.problem, exc.fix) from None
            item.report.pixels = image.width * image.height
            uuid = item.part.get("uuid")  # a client's own is kept (vLLM checks its type)
            if uuid is None:
                uuid = _cache_uuid(blob, hash_name)
            if profile.engine_args.get("tokenizer_mode") == "mistral":
                _replace_with_data_url(item.part, image, blob, uuid)
            else:
                _replace_with_image(item.part, image, uuid)
            return None
        try:
            info = inspect_video(blob)
        except VideoProblem as exc:
            raise MediaError(item.where, exc.reason, exc.problem, exc.fix) from None
        item.report.frames = info.frames
        if data_url is None:  # fetched: hand vLLM the bytes, so that it never fetches itself
            mime = _VIDEO_MIME.get(container_of(blob) or "", "video/mp4")
            item.part["video_url"] = {
                "url": f"data:{mime};base64,{pybase64.b64encode(blob).decode()}"
            }
        return info


# Characters per slice (a multiple of 4): about 1 ms of decoding with pybase64, so a
# 1-megapixel PNG (4 MB of base64) is one call. Slices of 128 Ki characters held the GIL for
# 0.05 ms each but cost 2.6 x the CPU of one call (2.25 against 0.87 ms for that PNG).
BASE64_SLICE = 1 << 22


def b64decode_sliced(text: str) -> bytes:
    """Strict base64 (as `b64decode(text, validate=True)`), decoded a slice at a time.

    pybase64 (SIMD; vLLM's own server decodes with it, and it comes with vLLM) rather than the
    standard library: 5 x 1-megapixel PNGs took 72 ms with `base64`, 4 ms with pybase64
    (bench.hotspots). A decoder holds the GIL for the whole of one call, on a worker thread
    too, so big images are cut into slices and the event loop gets the GIL back between them.
    """
    whole = (len(text) - 1) // BASE64_SLICE * BASE64_SLICE  # where the last slice begins
    if whole <= 0 or text.find("=", 0, whole) >= 0:
        # Padding before the last slice is invalid; the one-call decoder says so exactly.
        return pybase64.b64decode(text, validate=True)
    return b"".join(
        pybase64.b64decode(text[i : i + BASE64_SLICE], validate=True)
        for i in range(0, len(text), BASE64_SLICE)
    )


def _collect(content: Content) -> list[_Item]:
    items = []
    for located in content.media:
        kind, part, where = located.kind, located.part, located.where
        url = part_url(part, "image_url" if kind == "image" else "video_url")
        if url is None:
            raise MediaError(
                where,
                "url",
                f"The {kind} part has no URL.",
                f'Send {{"type": "{part["type"]}", "{kind}_url": {{"url": "..."}}}}.',
            )
        data_url = parse_data_url(url)
        report = MediaItemReport(where, kind, fetched=data_url is None)
        items.append(_Item(where, kind, part, url, data_url, report))
    return items


def _replace_with_image(part: dict[str, Any], image: Any, uuid: Any) -> None:
    """Turn the part into vLLM's in-process image part, with its cache uuid."""
    part.clear()
    part.update({"type": "image_pil", "image_pil": image, "uuid": uuid})


def _replace_with_data_url(part: dict[str, Any], image: Any, encoded: bytes, uuid: Any) -> None:
    """The image part for a Mistral tokenizer (`tokenizer_mode: mistral`): the checked bytes as
    a data: URL, with the same cache uuid.

    vLLM's Mistral renderer hands the request's own messages to mistral_common, which counts
    the image tokens from the images itself and knows no `image_pil` part (every image request
    would fail with "'image_pil' is not a valid ChunkTypes"). A data: URL is a part both take,
    and neither fetches anything for it; each decodes the image once more.
    """
    from PIL import Image

    mime = Image.MIME.get(image.format or "", "image/png")
    url = f"data:{mime};base64,{pybase64.b64encode(encoded).decode()}"
    part.clear()
    part.update({"type": "image_url", "image_url": {"url": url}, "uuid": uuid})


def _cache_uuid(encoded: bytes, hash_name: str) -> str:
    """The key vLLM's processor and prefix caches take for this image.

    Given a decoded image, vLLM hashes its pixels (3.5 ms CPU per RGB megapixel here); given a
    uuid, it uses that. The hash of the encoded bytes identifies the image as well (the image
    is a function of them) and is what vLLM's own server hashes for images it loads, with the
    same algorithm (`mm_hasher_algorithm`: blake3, or sha256 / sha512 where FIPS rules): 3 MB,
    the size of a 1-megapixel noise PNG, cost 1.3 ms of CPU with blake3 and 2.2 ms with sha256
    here. It runs on the decoding worker thread, beside the other images' work.
    """
    if hash_name == "blake3":
        return f"blake3:{blake3(encoded).hexdigest()}"
    return f"{hash_name}:{hashlib.new(hash_name, encoded).hexdigest()}"


def _check_sampling(payload: dict[str, Any], infos: list[VideoInfo]) -> None:
    """media_io_kwargs may not ask for more than a video has (the Qwen3.5 page says 400), and
    with both fps and num_frames the one giving fewer frames is used (as the page says): the
    other is removed, so that no loader has to choose."""
    video = (payload.get("media_io_kwargs") or {}).get("video")
    if not isinstance(video, dict):
        return
    fps, frames = video.get("fps"), video.get("num_frames")
    for info in infos:
        if isinstance(fps, int | float) and fps > info.fps:
            raise GuardError(
                "media_io_kwargs",
                f"media_io_kwargs.video.fps={fps:g} is above the video's own {info.fps:g} fps.",
                f"Ask for at most {info.fps:g} fps.",
                "media_io_kwargs.video.fps",
            )
        if isinstance(frames, int) and frames > info.frames:
            raise GuardError(
                "media_io_kwargs",
                f"media_io_kwargs.video.num_frames={frames} is more than the "
                f"video's {info.frames} frames.",
                f"Ask for at most {info.frames} frames.",
                "media_io_kwargs.video.num_frames",
            )
    if isinstance(fps, int | float) and isinstance(frames, int) and len(infos) == 1:
        by_fps = int(infos[0].frames / infos[0].fps * fps) if infos[0].fps > 0 else frames
        del video["fps" if frames <= by_fps else "num_frames"]


def _raise_first(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result
