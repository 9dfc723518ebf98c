"""Admission control: how much one replica takes on at once (NIM_MAX_QUEUED_REQUESTS / _TOKENS).

vLLM 0.32 has the same two limits (`max_num_queued_reqs`, `max_num_queued_tokens`), checked in
`AsyncLLM.check_admission` once a request is rendered: by then its images have been fetched and
decoded, the cost an overloaded replica can least afford, and the answer is a 503. nimctl checks
before the media intake, from an estimate, and answers 429 with `Retry-After`, so that a client
or gateway backs off instead of failing over. It counts what it has admitted itself (from the
check until the answer ends), which bounds what reaches the engine exactly, even for a burst
whose requests are all still in the intake when the next arrives.

The token estimate (documented in docs/sharing.md) never looks inside media: text counts one
token per `CHARS_PER_TOKEN` characters plus `TOKENS_PER_MESSAGE` for the template around each
message, an image or video counts the most tokens one item of its kind can take in this model,
as vLLM computes it at start (its size is not known before it is fetched and decoded; an upper
bound never lets a burst of large images through). Like vLLM's, a request's tokens count until
its first output (prefill done), and the token limit refuses new requests once the total is at
or above it, so one request larger than the limit still runs on an idle replica.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nimctl.errors import BadRequestError, TooManyRequestsError
from nimctl.guards.base import Content, messages

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 8
RETRY_AFTER_S = 1

REASON_REQUESTS = "max_queued_requests"
REASON_TOKENS = "max_queued_tokens"


@dataclass(frozen=True)
class Limits:
    requests: int | None = None
    tokens: int | None = None

    @property
    def enabled(self) -> bool:
        return self.requests is not None or self.tokens is not None


def estimate_tokens(
    payload: dict[str, Any], content: Content, media_tokens: Mapping[str, int]
) -> int:
    """Prompt tokens of a request, estimated without tokenising or decoding anything."""
    chars = 0
    count = 0
    for _, message in messages(payload):
        count += 1
        body = message.get("content")
        if isinstance(body, str):
            chars += len(body)
        elif isinstance(body, list):
            for part in body:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
    tools = payload.get("tools")
    if isinstance(tools, list):
        chars += len(repr(tools))  # the template writes them into the prompt
    media = sum(media_tokens.get(part.kind, 0) for part in content.media)
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * count + media


def choices(payload: dict[str, Any]) -> int:
    """Sequences a request occupies (`n`); a bad `n` counts 1 and is refused by validation."""
    n = payload.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


class Ticket:
    """One admitted request's share, given back in two steps: its tokens when its first output
    comes, the rest when its answer ends. Both are idempotent, so every exit path may call them."""

    __slots__ = ("_admission", "_seqs", "_tokens")

    def __init__(self, admission: Admission, seqs: int, tokens: int) -> None:
        self._admission = admission
        self._seqs = seqs
        self._tokens = tokens

    def prefilled(self) -> None:
        if self._tokens:
            self._admission.queued_tokens -= self._tokens
            self._tokens = 0

    def release(self) -> None:
        self.prefilled()
        if self._seqs:
            self._admission.admitted -= self._seqs
            self._seqs = 0


class Admission:
    """The counts of admitted requests and their prompt tokens; one per app, on the event loop
    (no lock: admit and release never await)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.admitted = 0
        self.queued_tokens = 0

    def admit(self, seqs: int, tokens: int) -> Ticket:
        """Take a request on, or raise TooManyRequestsError (429), or BadRequestError when `n` alone
        is over the request limit (no retry would help)."""
        most = self.limits.requests
        if most is not None:
            if seqs > most:
                raise BadRequestError(
                    f"The request asks for n={seqs} choices, more than this replica runs at once "
                    f"(NIM_MAX_QUEUED_REQUESTS={most}). Ask for at most {most}.",
                    param="n",
                )
            if self.admitted + seqs > most:
                raise TooManyRequestsError(
                    f"The server is at its limit of {most} requests at once "
                    f"(NIM_MAX_QUEUED_REQUESTS); retry after {RETRY_AFTER_S} s.",
                    REASON_REQUESTS,
                    RETRY_AFTER_S,
                )
        budget = self.limits.tokens
        if budget is not None and self.queued_tokens >= budget:
            raise TooManyRequestsError(
                f"The server has {self.queued_tokens:,} prompt tokens waiting, at its limit of "
                f"{budget:,} (NIM_MAX_QUEUED_TOKENS); retry after {RETRY_AFTER_S} s.",
                REASON_TOKENS,
                RETRY_AFTER_S,
            )
        self.admitted += seqs
        self.queued_tokens += tokens
        return Ticket(self, seqs, tokens)
