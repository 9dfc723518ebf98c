"""Images and videos in a request: counts, formats, per-request media settings, and the
translations some models need (HTML <img> tags, images before text)."""

from __future__ import annotations

import re
from typing import Any

from nimctl.guards.base import (
    CLIENT_PARTS,
    IMAGE_PARTS,
    Content,
    GuardError,
    Located,
    messages,
)
from nimctl.profiles import Profile

# CLIENT_PARTS are the content parts a client may send. vLLM also takes in-process ones
# (image_pil, embeddings), which must never come from the network.
_IMG_TAG = re.compile(r"""<img\s[^>]*?\bsrc\s*=\s*(["'])(?P<src>.*?)\1[^>]*>""", re.I | re.S)
# The seed's bounds on mm_processor_kwargs.size (pixels of the sampled frames or image).
MAX_EDGE_PIXELS = 16_777_216


def translate(payload: dict[str, Any], profile: Profile) -> None:
    if profile.rules.html_img_tags:
        for _, message in messages(payload):
            _img_tags_to_parts(message)


def reorder(payload: dict[str, Any], profile: Profile) -> None:
    if profile.rules.images_before_text:
        for _, message in messages(payload):
            content = message.get("content")
            if isinstance(content, list):
                # Stable: images keep their order, text keeps its order, images come first.
                content.sort(key=lambda p: not (isinstance(p, dict) and _is_image(p)))


def _img_tags_to_parts(message: dict[str, Any]) -> None:
    """`<img src="...">` inside text becomes an image part, as NIM accepts for clients that
    can only send text; the tag is removed from the text."""
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return
    rebuilt: list[Any] = []
    found = False
    for part in content:
        text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
        if not isinstance(text, str) or not _IMG_TAG.search(text):
            rebuilt.append(part)
            continue
        found = True
        for match in _IMG_TAG.finditer(text):
            rebuilt.append({"type": "image_url", "image_url": {"url": match.group("src")}})
        remaining = _IMG_TAG.sub("", text).strip()
        if remaining:
            rebuilt.append({"type": "text", "text": remaining})
    if found:
        message["content"] = rebuilt


def _is_image(part: dict[str, Any]) -> bool:
    return part.get("type") in IMAGE_PARTS


def check(payload: dict[str, Any], profile: Profile, content: Content) -> None:
    for located in content.unknown:
        raise GuardError(
            "content_part_types",
            f"{located.where} has type {located.part.get('type')!r}, which "
            f"{profile.served_model_name} does not take.",
            f"Use one of: {', '.join(CLIENT_PARTS)}.",
            f"{located.where}.type",
        )
    videos = content.videos
    _check_image_count(content.images, profile)
    _check_videos(videos, profile)
    _check_mm_kwargs(payload, profile, bool(videos))


def _check_image_count(images: list[Located], profile: Profile) -> None:
    limit = profile.max_images_per_prompt
    if len(images) > limit:
        raise GuardError(
            "max_images_per_prompt",
            f"The request has {len(images)} images; {profile.served_model_name} takes at most "
            f"{limit} per request (NIM_MAX_IMAGES_PER_PROMPT={limit}).",
            "Send fewer images, or raise NIM_MAX_IMAGES_PER_PROMPT on the server.",
            images[limit].where,
        )


def _check_videos(videos: list[Located], profile: Profile) -> None:
    if not videos:
        return
    where = videos[0].where
    model = profile.served_model_name
    if not profile.video_input:
        raise GuardError(
            "video_input",
            f"{where} is a video, and {model} takes no video input.",
            "Remove the video part; send images instead.",
            where,
        )
    limit = profile.max_videos_per_prompt
    if limit == 0:
        raise GuardError(
            "max_videos_per_prompt",
            f"{where} is a video, and video input is off on this server "
            "(NIM_MAX_VIDEOS_PER_PROMPT=0).",
            "Set NIM_MAX_VIDEOS_PER_PROMPT=1 on the server to enable video.",
            where,
        )
    if len(videos) > limit:
        raise GuardError(
            "max_videos_per_prompt",
            f"The request has {len(videos)} videos; {model} takes at most {limit} per request "
            f"(NIM_MAX_VIDEOS_PER_PROMPT={limit}).",
            "Send fewer videos, or raise NIM_MAX_VIDEOS_PER_PROMPT on the server.",
            videos[limit].where,
        )


def _check_mm_kwargs(payload: dict[str, Any], profile: Profile, has_video: bool) -> None:
    """Shape and bounds here; whether the values fit the video itself is checked once its
    bytes are known (media intake)."""
    io_kwargs = payload.get("media_io_kwargs")
    proc_kwargs = payload.get("mm_processor_kwargs")
    if not io_kwargs and not proc_kwargs:
        return
    if not profile.rules.request_mm_kwargs:
        field = "media_io_kwargs" if io_kwargs else "mm_processor_kwargs"
        raise GuardError(
            "request_mm_kwargs",
            f"{field} is not supported by {profile.served_model_name}.",
            f"Remove {field}.",
            field,
        )
    if isinstance(io_kwargs, dict) and io_kwargs:
        _check_media_io(io_kwargs, has_video)
    if isinstance(proc_kwargs, dict) and proc_kwargs:
        _check_processor_size(proc_kwargs)


def _check_media_io(io_kwargs: dict[str, Any], has_video: bool) -> None:
    unknown = sorted(set(io_kwargs) - {"video"})
    if unknown:
        raise GuardError(
            "media_io_kwargs",
            f"media_io_kwargs.{unknown[0]} is not supported.",
            'Use media_io_kwargs.video with "fps" or "num_frames".',
            f"media_io_kwargs.{unknown[0]}",
        )
    video = io_kwargs.get("video")
    if not isinstance(video, dict):
        raise GuardError(
            "media_io_kwargs",
            "media_io_kwargs.video must be an object.",
            'Send {"video": {"fps": 2.0}} or {"video": {"num_frames": 16}}.',
            "media_io_kwargs.video",
        )
    extra = sorted(set(video) - {"fps", "num_frames"})
    if extra:
        raise GuardError(
            "media_io_kwargs",
            f"media_io_kwargs.video.{extra[0]} is not supported.",
            'Use "fps" or "num_frames" (with both, the one giving fewer frames applies).',
            f"media_io_kwargs.video.{extra[0]}",
        )
    fps = video.get("fps")
    frames = video.get("num_frames")
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0
    ):
        raise GuardError(
            "media_io_kwargs",
            f"media_io_kwargs.video.fps={fps!r} is invalid.",
            "Give a number of frames per second above 0.",
            "media_io_kwargs.video.fps",
        )
    if frames is not None and (
        isinstance(frames, bool) or not isinstance(frames, int) or frames < 1
    ):
        raise GuardError(
            "media_io_kwargs",
            f"media_io_kwargs.video.num_frames={frames!r} is invalid.",
            "Give a whole number of frames, 1 or more.",
            "media_io_kwargs.video.num_frames",
        )
    if not has_video:
        raise GuardError(
            "media_io_kwargs",
            "media_io_kwargs.video sets video sampling, but the request has no video.",
            "Remove media_io_kwargs, or add the video it is meant for.",
            "media_io_kwargs.video",
        )


def _check_processor_size(proc_kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(proc_kwargs) - {"size"})
    if unknown:
        raise GuardError(
            "mm_processor_kwargs",
            f"mm_processor_kwargs.{unknown[0]} is not supported.",
            'Use mm_processor_kwargs.size with "shortest_edge" and "longest_edge".',
            f"mm_processor_kwargs.{unknown[0]}",
        )
    size = proc_kwargs.get("size")
    edges = ("shortest_edge", "longest_edge")
    if not isinstance(size, dict) or not size or set(size) - set(edges):
        raise GuardError(
            "mm_processor_kwargs",
            "mm_processor_kwargs.size must hold shortest_edge and/or longest_edge.",
            'Send {"size": {"shortest_edge": 1568, "longest_edge": 262144}}.',
            "mm_processor_kwargs.size",
        )
    for edge in edges:
        value = size.get(edge)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_EDGE_PIXELS
        ):
            raise GuardError(
                "mm_processor_kwargs",
                f"mm_processor_kwargs.size.{edge}={value!r} is out of range.",
                f"Give a whole number of pixels from 1 to {MAX_EDGE_PIXELS}.",
                f"mm_processor_kwargs.size.{edge}",
            )
    shortest, longest = size.get("shortest_edge"), size.get("longest_edge")
    if shortest is not None and longest is not None and shortest > longest:
        raise GuardError(
            "mm_processor_kwargs",
            f"mm_processor_kwargs.size.shortest_edge={shortest} is above longest_edge={longest}.",
            "Make shortest_edge at most longest_edge.",
            "mm_processor_kwargs.size.shortest_edge",
        )
