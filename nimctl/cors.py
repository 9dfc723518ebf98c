"""CORS settings (`NIM_CORS_*`, NIM 2.x's names) parsed into what Starlette's CORSMiddleware takes.

Parsed when the settings are, so that a typo (`https://app.example.com/`, a method `PSOT`) stops
`nimctl check` and `serve` with one line instead of silently never matching a browser's request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An origin is scheme://host[:port], nothing after it (browsers send exactly that).
_ORIGIN = re.compile(
    r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?"
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header names
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_origins(value: str) -> list[str]:
    origins = _items(value)
    if "*" in origins:
        if len(origins) > 1:
            raise ValueError("'*' allows every origin; list origins or give '*' alone")
        return origins
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"{origin!r} is not an origin: scheme://host[:port] with nothing after it, "
                "e.g. https://app.example.com"
            )
    return origins


def parse_methods(value: str) -> list[str]:
    methods = [m.upper() for m in _items(value)]
    for method in methods:
        if method != "*" and method not in _METHODS:
            raise ValueError(f"{method!r} is not one of {', '.join(sorted(_METHODS))} or '*'")
    return methods


def parse_headers(value: str) -> list[str]:
    headers = _items(value)
    for header in headers:
        if not _TOKEN.fullmatch(header):
            raise ValueError(f"{header!r} is not a header name")
    return headers


@dataclass(frozen=True)
class CorsPolicy:
    """CORSMiddleware's arguments; None of it exists when no origin is allowed."""

    allow_origins: list[str]
    allow_methods: list[str]
    allow_headers: list[str]
    expose_headers: list[str]
    max_age: int

    @classmethod
    def parse(
        cls, origins: str, methods: str, headers: str, expose: str, max_age: int
    ) -> CorsPolicy | None:
        allowed = parse_origins(origins)
        if not allowed:
            return None
        return cls(
            allowed, parse_methods(methods), parse_headers(headers), parse_headers(expose), max_age
        )
