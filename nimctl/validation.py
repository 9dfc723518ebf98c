"""Request-body checks that need no engine: strict scalars and satisfiable schemas.

Pure functions over pydantic models and JSON values, used by the vLLM seam (with vLLM's own
request model) and by the API tests' fake engine, so both refuse the same way. Nothing here
imports vllm.
"""

from __future__ import annotations

import dataclasses
import typing
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, Generic, Required, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from nimctl.errors import BadRequestError
from nimctl.validation_errors import request_error

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictRequestModel(Generic[ModelT]):
    """Validates JSON-decoded bodies into `model`, every scalar, at any depth, of its JSON type.

    pydantic's default (lax) mode coerces: `"yes"` and `1` become `true`, `2.0` and `"5"`
    integers, so a request runs with something its client did not write. Strict mode takes
    each scalar only of its own type (an integer still fills a float field, as in JSON), and it
    is a flag of the same validator, so it costs nothing per request. (Marking only the scalar
    schemas strict would not do: pydantic-core reuses each model class's own, lax, validator.)

    Strict mode is Python's, not JSON's, in two places. A stdlib-dataclass field (vLLM's
    `structured_outputs`) takes only an instance, so its object is checked strictly against a
    typed dict of the dataclass's fields (built once here) and handed on as the instance. An
    `Enum` field takes only members, not their values; vLLM 0.32's chat request has one, in
    the union member for openai-harmony messages (gpt-oss), which its other members cover for
    OpenAI-format messages (a unit test watches the list).
    """

    def __init__(self, model: type[ModelT]) -> None:
        self.model = model
        self.fields = frozenset(model.model_fields)
        self._dataclasses = {
            name: (kind, _fields_adapter(kind))
            for name, field in model.model_fields.items()
            for kind in _dataclasses_in(field.annotation)
        }

    def validate(self, payload: dict[str, Any]) -> ModelT:
        """The model instance; BadRequestError naming the first bad field otherwise."""
        unknown = sorted(payload.keys() - self.fields)
        if unknown:
            raise BadRequestError(
                f"Unsupported parameter(s): {', '.join(repr(k) for k in unknown)}. This server "
                "does not implement them; remove them from the request.",
                param=unknown[0],
            )
        data = payload
        for name, (kind, fields) in self._dataclasses.items():
            value = payload.get(name)
            if isinstance(value, dict):
                if data is payload:
                    data = dict(payload)  # the caller's dict stays as the client sent it
                data[name] = _dataclass_instance(kind, fields, value, name)
        try:
            return self.model.model_validate(data, strict=True)
        except ValidationError as exc:
            raise request_error(exc.errors(), payload) from None


def _dataclasses_in(annotation: Any) -> Iterator[type]:
    for kind in (annotation, *typing.get_args(annotation)):
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            yield kind


def _fields_adapter(kind: type) -> TypeAdapter[Mapping[str, object]]:
    """A typed dict of a dataclass's init fields; unknown keys are refused, not dropped."""
    hints = typing.get_type_hints(kind)
    fields = {
        field.name: hints[field.name]
        if field.default is not dataclasses.MISSING
        or field.default_factory is not dataclasses.MISSING
        else Required[hints[field.name]]
        for field in dataclasses.fields(kind)
        if field.init
    }
    # Built at run time from the dataclass's fields; mypy knows only TypedDicts written out.
    typed = TypedDict(kind.__name__, fields, total=False)  # type: ignore[misc]
    # pydantic reads a TypedDict's config from this attribute (what pydantic.with_config sets).
    typed.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return TypeAdapter(typed)


def _dataclass_instance(
    kind: type, fields: TypeAdapter[Mapping[str, object]], value: dict[str, Any], name: str
) -> object:
    try:
        checked = fields.validate_python(value, strict=True)
    except ValidationError as exc:
        raise request_error(exc.errors(), value, prefix=(name,)) from None
    try:
        return kind(**checked)
    except Exception as exc:  # the dataclass's own __post_init__ checks (vLLM's raise its own)
        raise BadRequestError(f"Invalid request: {name}: {exc}", param=name) from None


# --- structured outputs ---------------------------------------------------------------------

_MAX_SCHEMA_DEPTH = 128  # deeper than vLLM accepts (64); past it a schema is given the benefit
# Schema nodes looked at per check, at most: some ms of CPU on the event loop. A schema made
# to cost more is given the benefit of the doubt.
_MAX_VISITS = 20_000


def unsatisfiable_schema(schema: Any) -> str | None:
    """Why no finite JSON value can match `schema` (a JSON Schema), or None if one can.

    Grammar backends compile a `$ref` cycle without an exit (`{"$ref": "#"}`, an object whose
    required property is the object itself, an array of at least one of itself) into a grammar
    that accepts nothing, or only ever longer prefixes: the engine then fails at the first token
    (a 500) or generates until the token limit. This is the least-fixed-point test for
    "productive" grammar symbols, on the schema's structure (required properties, minimum
    item counts, `allOf` / `anyOf` / `oneOf`, `enum`, `false`); other constraints are left to
    the backend's own validation. It errs on the side of "satisfiable".
    """
    if not isinstance(schema, dict | bool):
        return None
    # Every target is a part of the schema, so walking the schema finds every $ref there is.
    targets = {
        ref: target
        for ref in dict.fromkeys(_refs(schema, 0))
        if (target := _resolve(schema, ref)) is not _UNKNOWN
    }
    # Least fixed point: a definition is productive once some finite value matches it; when
    # one becomes so, the definitions that refer to it are looked at again (a worklist, so a
    # chain of n definitions costs about 2n looks, in any order).
    users: dict[str, list[str]] = {ref: [] for ref in targets}
    for ref, target in targets.items():
        for inner in dict.fromkeys(_refs(target, 0)):
            if inner in users:
                users[inner].append(ref)
    walk = _Productivity(dict.fromkeys(targets, False))
    pending = deque(targets)
    try:
        while pending:
            ref = pending.popleft()
            if not walk.productive[ref] and walk.of(targets[ref], 0):
                walk.productive[ref] = True
                pending.extend(user for user in users[ref] if not walk.productive[user])
        if walk.of(schema, 0):
            return None
    except _TooLarge:
        return None
    stuck = [ref for ref, ok in walk.productive.items() if not ok]
    if stuck:
        return (
            f"no finite JSON value matches it: {stuck[0]!r} refers to itself (through "
            "$ref, required properties or minItems) with no way to end"
        )
    return "no JSON value matches it"


_UNKNOWN = object()


class _TooLarge(Exception):
    pass


def _refs(node: Any, depth: int) -> Iterator[str]:
    if depth > _MAX_SCHEMA_DEPTH:
        return
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            yield ref
        for key, value in node.items():
            if key not in ("enum", "const", "examples", "default"):  # values, not schemas
                yield from _refs(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item, depth + 1)


def _resolve(root: Any, ref: str) -> Any:
    """A local JSON pointer (`#`, `#/$defs/node`); anything else is unknown."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return _UNKNOWN  # an anchor or another document: not judged
    node = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _UNKNOWN  # the backend reports a dangling $ref itself
    return node


class _Productivity:
    """Whether some finite value matches a schema node, given what is known of the $refs."""

    def __init__(self, productive: dict[str, bool]) -> None:
        self.productive = productive
        self.budget = _MAX_VISITS

    def of(self, node: Any, depth: int) -> bool:
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict) or depth > _MAX_SCHEMA_DEPTH:
            return True
        deeper = depth + 1
        ref = node.get("$ref")
        if isinstance(ref, str) and not self.productive.get(ref, True):
            return False
        enum = node.get("enum")
        if isinstance(enum, list) and not enum:
            return False
        all_of = node.get("allOf")
        if isinstance(all_of, list) and not all(self.of(s, deeper) for s in all_of):
            return False
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list) and not any(self.of(s, deeper) for s in branches):
                return False
        types = node.get("type")
        if isinstance(types, str):
            types = [types]
        if not isinstance(types, list):
            types = _implied_types(node)
        return any(self._of_type(node, kind, deeper) for kind in types)

    def _of_type(self, node: dict[str, Any], kind: Any, depth: int) -> bool:
        if kind == "object":
            properties = node.get("properties")
            properties = properties if isinstance(properties, dict) else {}
            required = node.get("required")
            names = (
                [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
            )
            return all(self.of(properties[n], depth) for n in names if n in properties)
        if kind == "array":
            least = node.get("minItems")
            least = least if isinstance(least, int) and not isinstance(least, bool) else 0
            prefix = node.get("prefixItems")
            prefix = prefix if isinstance(prefix, list) else []
            if not all(self.of(item, depth) for item in prefix[:least]):
                return False
            if least > len(prefix):
                return self.of(node.get("items", True), depth)
            return True
        return True


def _implied_types(node: dict[str, Any]) -> list[str]:
    """Backends read a schema without `type` by its keywords, as OpenAI's structured outputs do."""
    if any(k in node for k in ("properties", "required", "additionalProperties")):
        return ["object"]
    if any(k in node for k in ("items", "prefixItems", "minItems")):
        return ["array"]
    return ["any"]
