"""A request body, read as the JSON object it must be: fast when it is one, exact when it is not.

Two parsers with one meaning. msgspec reads the body straight from its bytes: for the 20 MB of
a request with five base64 images it takes 9 ms where the standard library takes 18-40 (it
decodes the whole body to a str first, then copies each string out of it), and it refuses, as
JSON does, what Python's json module would take (NaN, Infinity, lone UTF-16 surrogates, floats
beyond the double range). Python's parser, with hooks that refuse the same things, is kept
for a body msgspec refuses: it says what is wrong and where, in the words clients already get.
Integers beyond 64 bits are the one thing msgspec takes and JSON's users cannot: a walk over
the decoded containers finds them (strings, most of a body, are not looked into).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, NoReturn

import msgspec

from nimctl.errors import BadRequestError
from nimctl.validation_errors import key_path

# The integers every field takes at most: one beyond came back as a 500 with no message
# (`top_k` of 2.9e27, found by the fuzzer; where in the engine it failed was not traced).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a dict, or a 400 that says what is wrong with it."""
    if not body or body.isspace():  # (strip() would copy a body that ends in a newline)
        raise BadRequestError("The request body is empty; send a JSON object.")
    try:
        payload = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        _explain_refusal(body, str(exc))
    if type(payload) is not dict or _has_wide_integer(payload):
        _explain_refusal(body, "")
    return payload


def _explain_refusal(body: bytes, reason: str) -> NoReturn:
    """Python's parser says what is wrong and where. Should it take the body (the parsers
    disagree), the body is refused all the same: what the fast path refuses reaches no model."""
    _parse_exactly(body)
    raise BadRequestError(f"The request body is not valid JSON ({reason or 'unreadable'}).")


def _has_wide_integer(payload: dict[str, Any]) -> bool:
    stack: list[Any] = [payload]
    while stack:
        node = stack.pop()
        values: Iterable[Any] = node.values() if type(node) is dict else node
        for value in values:
            kind = type(value)
            if kind is str:
                continue
            if kind is dict or kind is list:
                stack.append(value)
            elif kind is int and not INT64_MIN <= value <= INT64_MAX:
                return True
    return False


def _parse_exactly(body: bytes) -> dict[str, Any]:
    """Python's parser, refusing what JSON refuses, with the place and the reason (slow: for
    bodies already refused, and as the reference the fast path is tested against)."""
    wide: list[_WideInteger] = []

    def integer(text: str) -> int | _WideInteger:
        if len(text) < 19:  # 18 digits and a sign: always within 64 bits
            return int(text)
        value = int(text) if len(text) <= 20 else None  # no int() of a 5,000-digit literal
        if value is not None and INT64_MIN <= value <= INT64_MAX:
            return value
        wide.append(_WideInteger(text))
        return wide[-1]

    try:
        # RFC 8259: JSON on the wire is UTF-8, and NaN / Infinity are not JSON numbers (Python
        # reads them, and a NaN temperature would pass every range check downstream).
        payload = json.loads(
            body.decode("utf-8"),
            parse_constant=_not_a_number,
            parse_float=_finite_float,
            parse_int=integer,
        )
    except UnicodeDecodeError:
        raise BadRequestError("The request body is not valid UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}."
        ) from None
    except RecursionError:
        raise BadRequestError("The request body is nested too deeply.") from None
    if not isinstance(payload, dict):
        raise BadRequestError(
            f"The request body must be a JSON object, not {type(payload).__name__}."
        )
    if wide:
        _refuse_wide_integer(payload, wide[0])
    _refuse_lone_surrogates(payload)
    return payload


class _WideInteger:
    """An integer literal beyond 64 bits, kept as its text until its place in the body is found."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _refuse_wide_integer(payload: dict[str, Any], first: _WideInteger) -> None:
    param = key_path(_path_to(payload, first) or ()) or None
    where = f"`{param}`: " if param else ""
    shown = (
        first.text if len(first.text) <= 40 else f"{first.text[:40]}... ({len(first.text)} digits)"
    )
    raise BadRequestError(
        f"Invalid request: {where}{shown} is outside the 64-bit integer range; it must be "
        f"greater than or equal to {INT64_MIN} and less than or equal to {INT64_MAX}.",
        param=param,
    )


def _path_to(payload: Any, target: object) -> tuple[str | int, ...] | None:
    """Where `target` is in the body (a loop, not recursion: the body may be nested deep)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(payload, ())]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if isinstance(node, dict):
            stack.extend((value, (*path, key)) for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((value, (*path, i)) for i, value in reversed(list(enumerate(node))))
    return None


def _not_a_number(name: str) -> float:
    raise BadRequestError(f"The request body is not valid JSON: {name} is not a JSON number.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequestError(
            f"The request body has the number {text[:40]}, too large for a float (Infinity)."
        )
    return value


def _refuse_lone_surrogates(payload: Any) -> None:
    """Pairs were joined by the decoder; a surrogate left over cannot be encoded as UTF-8."""
    stack = [payload]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequestError(
                    "The request body has a lone UTF-16 surrogate escape (\\uD800-\\uDFFF) in "
                    f"the string {item[:40]!r}; send valid Unicode."
                ) from None
