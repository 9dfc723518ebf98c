"""What every guard shares: the error and safe walks over a not-yet-validated request body."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from nimctl.errors import Refusal


class GuardError(Refusal):
    """A request that breaks a documented rule of the model: 400, with the rule named."""

    kind = "rule"

    def __init__(self, rule: str, problem: str, fix: str, param: str | None = None) -> None:
        super().__init__(rule, f"{problem} {fix} (rule: {rule})", fix, param=param)

    @property
    def rule(self) -> str:
        return self.reason


def messages(payload: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    found = payload.get("messages")
    if not isinstance(found, list):
        return []
    return [(i, m) for i, m in enumerate(found) if isinstance(m, dict)]


def parts(message: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    content = message.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, dict):
                yield j, part


def part_url(part: dict[str, Any], kind: str) -> str | None:
    """The URL of an `image_url` / `video_url` part, in either accepted spelling."""
    value = part.get(kind)
    if isinstance(value, dict):
        value = value.get("url")
    return value if isinstance(value, str) else None


# The content part types that carry media, as clients send them (OpenAI's and the Responses
# API's spellings); text parts, and everything a client may send, in CLIENT_PARTS.
IMAGE_PARTS = ("image_url", "input_image")
VIDEO_PARTS = ("video_url",)
CLIENT_PARTS = ("text", "input_text", *IMAGE_PARTS, *VIDEO_PARTS)


@dataclass(frozen=True)
class Located:
    """A content part, its kind ("image", "video" or "other"), and where the client put it."""

    kind: Literal["image", "video", "other"]
    message: int
    index: int
    part: dict[str, Any]

    @property
    def where(self) -> str:
        return f"messages[{self.message}].content[{self.index}]"


@dataclass(frozen=True)
class Content:
    """One pass over a request's content parts: its media in the client's order, and the parts
    of a type no model takes. Guards and the media intake read this instead of each walking the
    body; taken before parts are reordered for a model, it names parts where the client put
    them."""

    media: tuple[Located, ...]
    unknown: tuple[Located, ...]

    @property
    def images(self) -> list[Located]:
        return [p for p in self.media if p.kind == "image"]

    @property
    def videos(self) -> list[Located]:
        return [p for p in self.media if p.kind == "video"]


def classify(payload: dict[str, Any]) -> Content:
    media: list[Located] = []
    unknown: list[Located] = []
    for i, message in messages(payload):
        for j, part in parts(message):
            kind = part.get("type")
            if kind in IMAGE_PARTS:
                media.append(Located("image", i, j, part))
            elif kind in VIDEO_PARTS:
                media.append(Located("video", i, j, part))
            elif isinstance(kind, str) and kind not in CLIENT_PARTS:
                unknown.append(Located("other", i, j, part))
    return Content(tuple(media), tuple(unknown))
