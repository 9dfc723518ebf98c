"""Reading request bodies: what Python's json module accepts but JSON does not; scalars as
strict at every depth as JSON types them; structured-output schemas that no value matches."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ValidationError
from typing_extensions import TypedDict

from nimctl.api.json_body import _parse_exactly, parse_json_object
from nimctl.errors import BadRequestError
from nimctl.validation import StrictRequestModel, unsatisfiable_schema
from nimctl.validation_errors import json_path


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b'{"a": 1', "not valid JSON"),
        (b"[1]", "JSON object, not list"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": [Infinity]}', "Infinity is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 1e400}', "too large for a float"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b'{"a": {"b": ["\\ud800"]}}', "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_refused(raw, fragment):
    with pytest.raises(BadRequestError, match=None) as caught:
        parse_json_object(raw)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"top_k": 2901066795100782070404743168}', "top_k"),  # found by the fuzzer: a 500
        (b'{"seed": 9223372036854775808}', "seed"),
        (b'{"seed": -9223372036854775809}', "seed"),
        (b'{"logit_bias": {"5": 1, "7": 100000000000000000000}}', "logit_bias.7"),
        (b'{"messages": [{"a": [1, -' + b"9" * 5000 + b"]}]}", "messages[0].a[1]"),
        (b'{"x": ' * 500 + b"1" * 30 + b"}" * 500, "x" + ".x" * 499),
    ],
    ids=["top_k", "2**63", "-2**63-1", "nested", "5000-digits", "500-deep"],
)
def test_integers_beyond_64_bits_are_refused_where_they_are(raw, param):
    with pytest.raises(BadRequestError) as caught:
        parse_json_object(raw)
    assert caught.value.param == param
    assert "outside the 64-bit integer range" in str(caught.value)


def test_64_bit_integers_pass():
    body = b'{"a": 9223372036854775807, "b": -9223372036854775808, "c": [0, -1, 123456789012]}'
    assert parse_json_object(body) == {"a": 2**63 - 1, "b": -(2**63), "c": [0, -1, 123456789012]}


def test_valid_unicode_and_numbers_pass():
    payload = parse_json_object(b'{"a": "\\ud83d\\ude00 \\u00e9", "t": 0.7, "n": 1e308}')
    assert payload == {"a": "\U0001f600 \u00e9", "t": 0.7, "n": 1e308}


def typed(value: Any) -> Any:
    """A value with its JSON types spelt out: 1 and 1.0 (and True) compare equal in Python."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, repr(value))


def outcome(parse: Any, raw: bytes) -> Any:
    try:
        return typed(parse(raw))
    except BadRequestError:
        return "refused"


def same_outcome(raw: bytes) -> None:
    fast, exact = outcome(parse_json_object, raw), outcome(_parse_exactly, raw)
    assert fast == exact, raw[:200]


def json_values(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**63 - 1, -(2**63), 2**53 + 1, rng.randrange(-(10**12), 10**12)])
    if kind == 2:
        return rng.choice([0.0, -0.0, 0.1, 1e308, 5e-324, 2.5, rng.uniform(-1e6, 1e6)])
    if kind in (3, 4, 5):
        return "".join(
            rng.choice('aZ0 \\"\n\t\u00e9\u4e2d\U0001f600/') for _ in range(rng.randrange(8))
        )
    if kind in (6, 7):
        return {f"k{i}": json_values(rng, depth + 1) for i in range(rng.randrange(4))}
    return [json_values(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_the_fast_parser_means_what_pythons_does_for_valid_bodies():
    """Numbers keep their JSON type (1 against 1.0), floats their exact value, strings every
    escape; 300 generated bodies, written compact, spaced and escaped to ASCII."""
    rng = random.Random(7)
    for _ in range(300):
        value = {"v": json_values(rng)}
        for text in (
            json.dumps(value),
            json.dumps(value, indent=2, ensure_ascii=False),
            json.dumps(value, separators=(",", ":")),
        ):
            raw = text.encode()
            assert typed(parse_json_object(raw)) == typed(value) == typed(_parse_exactly(raw))


SEEDS = [
    b'{"model": "m", "messages": [{"role": "user", "content": "h\\u00e9 \\ud83d\\ude00"}]}',
    b'{"top_k": 12345678901234567890, "t": 1.5e308, "n": [1, -0, 0.5E-3, true, null]}',
    b'{"a": {"b": [[], {}, "x\\"y"]}, "c": -9223372036854775808}',
]
NOISE = [
    b"\\",
    b'"',
    b"\\ud800",
    b"\\udc00",
    b"9" * 20,
    b"-",
    b"e999",
    b"NaN",
    b"\xff",
    b"\xc3",
    b"\x00",
    b",",
    b"}",
    b"]",
    b"[",
    b"{",
    b":",
    b" ",
    b"1",
    b".",
    b"\xef\xbb\xbf",
    b"\\u",
]


def test_both_parsers_refuse_and_take_the_same_bodies():
    """Bodies broken at random (a byte dropped, noise put in, a byte changed): the fast path
    refuses exactly what Python's parser refuses, and takes the rest with the same meaning."""
    rng = random.Random(11)
    for _ in range(3000):
        raw = bytearray(rng.choice(SEEDS))
        for _ in range(rng.randrange(1, 3)):
            at = rng.randrange(len(raw) + 1)
            change = rng.randrange(3)
            if change == 0 and raw:
                del raw[min(at, len(raw) - 1)]
            elif change == 1:
                raw[at:at] = rng.choice(NOISE)
            elif raw:
                raw[min(at, len(raw) - 1)] = rng.randrange(256)
        same_outcome(bytes(raw))


def test_a_body_of_five_images_reads_the_same():
    image = base64.b64encode(bytes(range(256)) * 4000).decode()
    parts = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}] * 5
    raw = json.dumps({"messages": [{"role": "user", "content": parts}], "max_tokens": 1}).encode()
    assert parse_json_object(raw) == _parse_exactly(raw) == json.loads(raw)


# --- strict scalars at every depth (nimctl.validation.StrictRequestModel) ----------------------


class Options(BaseModel):
    include_usage: bool | None = None
    ratio: float = 1.0


class Part(TypedDict, total=False):
    text: str
    weight: int


@dataclasses.dataclass
class Constraint:
    json: dict[str, Any] | None = None
    json_object: bool | None = None
    whitespace: str | None = None

    def __post_init__(self) -> None:
        if self.json is not None and self.json_object is not None:
            raise ValueError("json and json_object exclude each other")


class Toy(BaseModel):
    stream: bool = False
    n: int | None = None
    temperature: float | None = None
    mode: Literal["auto", "none"] = "auto"
    options: Options | None = None
    parts: list[Part] = []
    bias: dict[str, float] | None = None
    constraint: Constraint | None = None


@pytest.fixture(scope="module")
def toy() -> StrictRequestModel:
    return StrictRequestModel(Toy)


@pytest.mark.parametrize(
    ("payload", "param", "fragment"),
    [
        ({"stream": "yes"}, "stream", 'stream must be true or false, not "yes"'),
        ({"stream": 1}, "stream", "stream must be true or false, not 1"),
        ({"n": 2.0}, "n", "n must be an integer, not 2.0"),
        ({"n": "5"}, "n", 'n must be an integer, not "5"'),
        ({"n": True}, "n", "n must be an integer, not true"),
        ({"temperature": "0.5"}, "temperature", "must be a number"),
        ({"temperature": False}, "temperature", "must be a number"),
        ({"options": {"include_usage": "yes"}}, "options.include_usage", "true or false"),
        ({"options": {"ratio": "1"}}, "options.ratio", "must be a number"),
        ({"parts": [{"text": "a"}, {"weight": 1.5}]}, "parts[1].weight", "an integer"),
        ({"bias": {"5": "1"}}, "bias.5", "must be a number"),
        ({"constraint": {"json_object": "yes"}}, "constraint.json_object", "true or false"),
        ({"constraint": {"jsn": {}}}, "constraint.jsn", "Extra inputs are not permitted"),
        ({"constraint": {"json": {}, "json_object": True}}, "constraint", "exclude each other"),
        ({"frobnicate": 1}, "frobnicate", "Unsupported parameter(s): 'frobnicate'"),
    ],
)
def test_strict_refuses_coercion_at_any_depth(toy, payload, param, fragment):
    with pytest.raises(BadRequestError) as caught:
        toy.validate(payload)
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_strict_takes_what_json_means(toy):
    payload = {
        "stream": True,
        "n": 2,
        "temperature": 1,  # an integer fills a float field, as in JSON
        "mode": "none",  # literals by their value
        "options": {"include_usage": False, "ratio": 0},
        "parts": [{"text": "a", "weight": 3}],
        "bias": {"5": -1, "6": 2.5},
        "constraint": {"json": {"type": "object"}, "whitespace": " "},
    }
    sent = json.loads(json.dumps(payload))
    request = toy.validate(payload)
    assert request.temperature == 1.0 and request.mode == "none"
    assert request.constraint == Constraint(json={"type": "object"}, whitespace=" ")
    assert payload == sent  # the caller's dict is not changed


def test_strict_scalars_cost_nothing_extra_per_field(toy):
    """Strictness is pydantic's own flag: no per-field Python loop that grows with the body."""
    assert StrictRequestModel(Toy).fields == frozenset(Toy.model_fields)
    assert set(toy._dataclasses) == {"constraint"}


def test_error_param_is_the_path_in_the_body():
    class Inner(BaseModel):
        flag: bool

    class Outer(BaseModel):
        inner: Inner | list[int]

    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"inner": {"flag": "x"}}, strict=True)
    loc = caught.value.errors()[0]["loc"]
    assert "Inner" in loc  # pydantic names the union member
    assert json_path(loc, {"inner": {"flag": "x"}}) == ("inner", "flag")
    assert json_path(("a", "missing"), {"a": {}}, keep_last=True) == ("a", "missing")


# --- structured-output schemas that no finite value matches -------------------------------------

NODE_NEEDS_ITSELF = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {"child": {"$ref": "#/$defs/node"}},
            "required": ["child"],
        }
    },
    "$ref": "#/$defs/node",
}


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"$ref": "#"}, "'#' refers to itself"),
        (
            {
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                "$ref": "#/$defs/a",
            },
            "'#/$defs/a' refers to itself",
        ),
        (NODE_NEEDS_ITSELF, "'#/$defs/node' refers to itself"),
        (
            {"items": {"$ref": "#"}, "minItems": 1},  # an array of at least one of itself
            "'#' refers to itself",
        ),
        ({"allOf": [{"type": "string"}, {"$ref": "#"}]}, "'#' refers to itself"),
        ({"enum": []}, "no JSON value matches it"),
        ({"anyOf": []}, "no JSON value matches it"),
        (False, "no JSON value matches it"),
    ],
)
def test_unsatisfiable_schemas_are_named(schema, fragment):
    reason = unsatisfiable_schema(schema)
    assert reason is not None and fragment in reason


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}}}},
        {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}},
        {
            "type": "object",
            "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
            "required": ["next"],
        },
        {"type": ["object", "null"], "properties": {"c": {"$ref": "#"}}, "required": ["c"]},
        {"$ref": "#/$defs/missing"},  # the backend names a dangling $ref itself
        {"$ref": "https://example.com/schema.json"},
        {"properties": {"default": {"$ref": "#"}}},  # a property named like a keyword
        True,
        "not a schema",
    ],
)
def test_satisfiable_schemas_pass(schema):
    assert unsatisfiable_schema(schema) is None


# --- vLLM's own chat request, through the seam (no engine started) -------------------------------


@pytest.fixture(scope="module")
def vllm_engine() -> Any:
    """A VllmEngine whose request checks are wired as `start()` wires them, with xgrammar's
    check of vLLM standing in for the configured backend's (it needs no tokenizer)."""
    pytest.importorskip("vllm")
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.sampling_params import SamplingParams
    from vllm.v1.structured_output.backend_xgrammar import validate_xgrammar_grammar

    from nimctl.engine.vllm import VllmEngine

    def check(constraint: Any) -> None:
        validate_xgrammar_grammar(
            SamplingParams(structured_outputs=dataclasses.replace(constraint))
        )

    from nimctl.profiles import ProfileStore, builtin_profiles_dir
    from nimctl.settings import NimSettings

    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    engine = VllmEngine(NimSettings(), profile)
    engine._validator = StrictRequestModel(ChatCompletionRequest)
    engine._check_constraint = check
    return engine


USER = [{"role": "user", "content": "hi"}]


def legitimate_requests() -> list[tuple[str, dict[str, Any]]]:
    """The seed pages' requests (images as media intake hands them on) and SDK-shaped ones."""
    from PIL import Image

    from tests.support.seeds import EXAMPLES

    image = Image.new("RGB", (8, 8))
    found = []
    for profile, examples in EXAMPLES.items():
        for name, body in examples:
            body = json.loads(json.dumps(body))
            for message in body["messages"]:
                for part in message["content"] if isinstance(message["content"], list) else ():
                    if part.get("type") == "image_url":
                        part.clear()
                        part.update({"type": "image_pil", "image_pil": image})
            found.append((f"{profile}: {name}", {"model": "m", **body}))
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
    }
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    found += [
        (
            "tools round trip",
            {
                "model": "m",
                "messages": [
                    *USER,
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                ],
                "tools": [tool],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "parallel_tool_calls": False,
            },
        ),
        (
            "sampling",
            {
                "model": "m",
                "messages": USER,
                "temperature": 0,
                "top_p": 1,
                "top_k": -1,
                "seed": 3,
                "stop": ["a"],
                "logit_bias": {"5": 1, "6": -2.5},
                "logprobs": True,
                "top_logprobs": 2,
                "n": 2,
                "max_completion_tokens": 5,
                "ignore_eos": True,
            },
        ),
        (
            "stream with usage",
            {
                "model": "m",
                "messages": USER,
                "stream": True,
                "stream_options": {"include_usage": True, "continuous_usage_stats": False},
            },
        ),
        (
            "json schema",
            {
                "model": "m",
                "messages": USER,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "strict": True, "schema": {"type": "object"}},
                },
            },
        ),
        (
            "json object",
            {"model": "m", "messages": USER, "response_format": {"type": "json_object"}},
        ),
        ("choice", {"model": "m", "messages": USER, "structured_outputs": {"choice": ["a", "b"]}}),
        ("regex", {"model": "m", "messages": USER, "structured_outputs": {"regex": "[a-z]+"}}),
    ]
    return found


def test_every_legitimate_request_passes_strict_validation(vllm_engine):
    requests = legitimate_requests()
    assert len(requests) >= 25
    for name, payload in requests:
        vllm_engine.parse_chat_request(payload)  # raises, naming the case, if refused
        assert name


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
        ({"stream": "yes"}, "stream"),
        ({"max_tokens": 2.0}, "max_tokens"),
        ({"logit_bias": {"5": "1"}}, "logit_bias.5"),
        ({"allowed_token_ids": [1.0]}, "allowed_token_ids[0]"),
        ({"structured_outputs": {"json_object": "yes"}}, "structured_outputs.json_object"),
        ({"structured_outputs": {"jsn": {}}}, "structured_outputs.jsn"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "strict": "yes"}}]},
            "tools[0].function.strict",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "strict": 1}}},
            "response_format.json_schema.strict",
        ),
    ],
)
def test_nested_scalars_are_as_strict_as_top_level_ones(vllm_engine, extra, param):
    with pytest.raises(BadRequestError) as caught:
        vllm_engine.parse_chat_request({"model": "m", "messages": USER, **extra})
    assert caught.value.param == param


def test_strict_mode_hazards_of_vllms_request_model_are_known():
    """Strict (Python) mode takes only instances for enums, tuples, sets, dates... Such a field
    in vLLM's chat request would refuse its JSON value; the only one is watched here."""
    pytest.importorskip("vllm")
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    hazards: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in ("enum", "tuple", "set", "frozenset", "date", "datetime", "uuid", "bytes"):
                hazards.append(".".join(p for p in path if p not in ("schema", "fields")))
            for key, value in node.items():
                if key not in ("metadata", "serialization"):
                    walk(value, (*path, key) if isinstance(key, str) else path)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    walk(ChatCompletionRequest.__pydantic_core_schema__, ())
    # openai-harmony messages (gpt-oss); the OpenAI message members cover the JSON form.
    assert len(hazards) == 1 and hazards[0].endswith("author.role"), hazards


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"$ref": "#"}},
                }
            },
            "response_format.json_schema.schema",
            "'#' refers to itself",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": NODE_NEEDS_ITSELF},
                }
            },
            "response_format.json_schema.schema",
            "'#/$defs/node' refers to itself",
        ),
        (
            {"structured_outputs": {"json": json.dumps({"$ref": "#"})}},
            "structured_outputs.json",
            "refers to itself",
        ),
        (
            {"structured_outputs": {"json": {"type": "nonsense"}}},
            "structured_outputs.json",
            "nonsense",  # vLLM's own check, with the field named
        ),
        ({"structured_outputs": {"regex": "("}}, "structured_outputs.regex", "regex"),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "g", "parameters": {}}},
                    {"type": "function", "function": {"name": "f", "parameters": {"$ref": "#"}}},
                ],
                "tool_choice": "required",
            },
            "tools[1].function.parameters",
            "tool_choice forces a call",
        ),
    ],
)
def test_structured_outputs_the_engine_cannot_follow_are_refused(
    vllm_engine, extra, param, fragment
):
    with pytest.raises(BadRequestError) as caught:
        vllm_engine.parse_chat_request({"model": "m", "messages": USER, **extra})
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_a_tool_not_forced_is_not_judged(vllm_engine):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#"}}}]
    vllm_engine.parse_chat_request({"model": "m", "messages": USER, "tools": tools})
    named = {"type": "function", "function": {"name": "g"}}
    tools.append({"type": "function", "function": {"name": "g", "parameters": {}}})
    vllm_engine.parse_chat_request(
        {"model": "m", "messages": USER, "tools": tools, "tool_choice": named}
    )


def role_event(content: str = "") -> str:
    delta = {"role": "assistant", "content": content}
    return f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n"


async def test_a_constrained_stream_failing_at_its_first_token_is_a_400():
    pytest.importorskip("vllm")
    from nimctl.engine.vllm import _hold_until_generating

    closed = []

    async def failing() -> Any:
        try:
            yield role_event()
            error = {"message": "Internal server error", "type": "X", "param": None, "code": 500}
            yield f"data: {json.dumps({'error': error})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            closed.append(True)

    with pytest.raises(BadRequestError) as caught:
        await _hold_until_generating(failing(), "structured_outputs.grammar")
    assert caught.value.param == "structured_outputs.grammar"
    assert closed == [True]


async def test_a_constrained_stream_that_generates_is_passed_on_whole():
    pytest.importorskip("vllm")
    from nimctl.engine.vllm import _hold_until_generating

    events = [
        role_event(),
        'data: {"choices": [{"delta": {"content": "a"}}]}\n\n',
        "data: [DONE]\n\n",
    ]

    async def working() -> Any:
        for event in events:
            yield event

    stream = await _hold_until_generating(working(), "response_format")
    assert [event async for event in stream] == events


def test_schema_checks_survive_hostile_schemas():
    """Unhashable `required` entries, and a schema made to cost more than the check spends."""
    assert unsatisfiable_schema({"type": "object", "required": [{}, []], "properties": {}}) is None
    chain = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(50)}
    chain["d50"] = {"$ref": "#/$defs/d0"}
    assert "refers to itself" in (
        unsatisfiable_schema({"$defs": chain, "$ref": "#/$defs/d0"}) or ""
    )
    # Thousands of chained definitions, listed against the order the fixed point needs.
    long = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(5000)}
    long["d5000"] = {"type": "string"}
    assert unsatisfiable_schema({"$defs": long, "$ref": "#/$defs/d0"}) is None


def test_a_constraints_check_is_remembered(vllm_engine):
    """Applications repeat their schemas: the grammar conversion is paid once per schema."""
    checked: list[Any] = []
    check = vllm_engine._check_constraint

    def counted(constraint: Any) -> None:
        checked.append(constraint)
        check(constraint)

    vllm_engine._check_constraint = counted
    good = {"type": "object", "properties": {"remembered": {"type": "integer"}}}
    bad = {"$defs": {"remembered": {"$ref": "#"}}, "$ref": "#"}
    try:
        for _ in range(3):
            for schema in (good, bad):
                fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
                payload = {"model": "m", "messages": USER, "response_format": fmt}
                if schema is good:
                    vllm_engine.parse_chat_request(payload)
                else:
                    with pytest.raises(BadRequestError):
                        vllm_engine.parse_chat_request(payload)
        assert len(checked) == 2
    finally:
        vllm_engine._check_constraint = check
