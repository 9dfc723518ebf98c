"""How pydantic's validation errors read, wherever nimctl shows one.

pydantic says where a problem is as a location tuple, with the names of union members and
wrapping validators in it, and what it is in a sentence framed for Python (`Value error, ...`).
Settings (CLI flags, `NIM_*` variables, a values file's `env:`), profile files, the values file
of `nimctl k8s` and request bodies all show these errors; this module is the one place that turns
them into words, so that a bad port reads alike from a flag, a variable or a values file. Callers
say only what names the place.

Configuration: `invalid <where>=<value>: <what is wrong>` per problem, on one line (no value
where there is none: a missing or unknown key, a rule across fields). Requests: the first
problem as a 400 whose `param` is the path in the body as OpenAI writes it,
`messages[0].content[1].image_url`, as the guards and the media intake name parts.

Only bad input reaches this module; a good request or configuration never calls it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from nimctl.errors import BadRequestError

Loc = tuple[str | int, ...]

# A union reports once per member, with the member's type last in the location; these are
# merged into one problem ("should be a string or integer"). Member -> the error types it gives.
_UNION_MEMBERS = {
    "str": ("string", {"string_type"}),
    "int": ("integer", {"int_type", "int_parsing", "int_from_float"}),
    "float": ("number", {"float_type", "float_parsing"}),
    "bool": ("boolean", {"bool_type", "bool_parsing"}),
}
_MEMBER_NAMES = {name for name, _ in _UNION_MEMBERS.values()}
# pydantic's error types for a scalar of the wrong JSON type, and what the field takes instead.
_KIND_NAMES = {
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
}
# Where FastAPI found a value; not a part of the body's path.
_REQUEST_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})


def what(error: Mapping[str, Any]) -> str:
    """pydantic's sentence without its Python framing."""
    return str(error["msg"]).removeprefix("Value error, ")


def key_path(parts: Iterable[str | int]) -> str:
    """Keys dotted, list indices in brackets: `messages[0].content[1].image_url`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


# --- configuration ----------------------------------------------------------------------------


def describe(
    exc: ValidationError,
    where: Callable[[Loc], str],
    *,
    unknown: str = "unknown key",
    secret: Callable[[Loc], bool] = lambda loc: False,
) -> list[str]:
    """Each problem as `<where>=<value>: <what is wrong>`, or `<where>: <what is wrong>` without
    a value; `where(())` names the whole (a rule across fields), "" for no name at all.

    `unknown` says what an unknown key is and where the known ones are listed; a value for
    which `secret` is true shows as `***`.
    """
    found: dict[Loc, tuple[list[str], object]] = {}
    for error in exc.errors():
        loc: Loc = tuple(error["loc"])
        member = _member(loc, error["type"])
        if member is not None:
            loc = loc[:-1]
        if error["type"] == "extra_forbidden":
            message, value = unknown, _NO_VALUE
        elif error["type"] == "missing":
            message, value = "missing", _NO_VALUE
        else:
            message, value = member or what(error), error.get("input") if loc else _NO_VALUE
        if value is not _NO_VALUE and secret(loc):
            value = "***"
        found.setdefault(loc, ([], value))[0].append(message)
    lines = []
    for loc, (messages, value) in found.items():
        name = where(loc)
        if value is not _NO_VALUE:
            name = f"{name}={value!r}"
        text = _members_text(messages) or "; ".join(messages)
        lines.append(f"{name}: {text}" if name else text)
    return lines


_NO_VALUE = object()


def _member(loc: Loc, kind: str) -> str | None:
    """The union member an error is about, when the location ends in one."""
    last = loc[-1] if loc else None
    if isinstance(last, str) and last in _UNION_MEMBERS:
        name, kinds = _UNION_MEMBERS[last]
        if kind in kinds:
            return name
    return None


def _members_text(messages: Sequence[str]) -> str | None:
    if not messages or not all(m in _MEMBER_NAMES for m in messages):
        return None
    *rest, last = messages
    return f"should be a {', '.join(rest)} or {last}" if rest else f"should be a {last}"


# --- requests ---------------------------------------------------------------------------------


def request_error(
    errors: Sequence[Mapping[str, Any]], payload: Any, prefix: Loc = (), *, in_body: bool = True
) -> BadRequestError:
    """The first problem of a request body as a 400, located by its path in the body (`param`).

    `payload` is the body as the client sent it (pydantic's locations are mapped onto it);
    `prefix` is where it sits in the whole body when it is a part of one. `in_body` false: the
    locations name a query or header parameter, as they are.
    """
    if not errors:
        return BadRequestError("Invalid request: the body does not validate.")
    first = errors[0]
    loc = tuple(first["loc"])
    parts = json_path(loc, payload, keep_last=first["type"] == "missing") if in_body else loc
    param = key_path((*prefix, *parts)) or None
    if param is None:  # a model-level check; vLLM's errors say which field they are about
        param = getattr(first.get("ctx", {}).get("error"), "parameter", None)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    kind = _KIND_NAMES.get(first["type"])
    if kind and param:
        shown = json.dumps(first.get("input"), default=str)
        text = f"Invalid request: {param} must be {kind}, not {shown[:40]}{more}."
    elif param:
        text = f"Invalid request: {param}: {what(first)}{more}"
    else:
        text = f"Invalid request: {what(first)}"
    return BadRequestError(text, param=param)


def framework_request_error(errors: Sequence[Mapping[str, Any]], body: Any) -> BadRequestError:
    """FastAPI's validation errors (a typed route parameter), which name the part of the
    request first (`body`, `query`, ...), read as the request path's own."""
    if not errors:
        return request_error(errors, body)
    first = dict(errors[0])
    loc = tuple(first.get("loc", ()))
    source = loc[0] if loc and loc[0] in _REQUEST_SOURCES else "body"
    first["loc"] = loc[1:] if loc[:1] == (source,) else loc
    return request_error([first, *errors[1:]], body, in_body=source == "body")


def json_path(
    loc: tuple[str | int, ...], payload: Any, *, keep_last: bool = False
) -> tuple[str | int, ...]:
    """pydantic's error location as a path in the body: keys and indices that are there.

    pydantic puts the names of union members and wrapping validators into locations
    (`response_format.function-wrap[__log_extra_fields__()].json_schema`); a client needs the
    path of what it sent. A missing field (`keep_last`) is named although it is not there.
    """
    parts: list[str | int] = []
    node = payload
    for index, part in enumerate(loc):
        there = (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if there:
            node = node[part]
        elif not (keep_last and index == len(loc) - 1):
            continue
        parts.append(part)
    return tuple(parts)
