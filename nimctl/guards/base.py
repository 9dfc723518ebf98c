"""What every guard shares: the error and safe walks over a not-yet-validated request body."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
