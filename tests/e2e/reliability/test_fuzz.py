"""Schemathesis against nimctl's own OpenAPI document, on the real server.

Requests that fit the document (positive) and requests that break it (negative) are sent to
every route. The promise: no 5xx, every refusal in the one error shape, and the server still
ready at the end. Output length is bounded (at most 8 tokens, n at most 2) so that the run
costs time in request handling, not in generating text; the shapes fuzzed are untouched.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from tests.support.errors import assert_error_shape
from tests.support.reliability import FULL, size

# Per generation mode on the chat route: 2 x 1100 in the full run, 2 x 150 in CI.
CHAT_EXAMPLES = size(ci=150, full=1100)
OTHER_EXAMPLES = size(ci=3, full=10)  # the GET routes take no input
# Per generation mode on each token route (/tokenize, /detokenize, render): no inference.
TOKEN_EXAMPLES = size(ci=20, full=200)
TOKEN_ROUTES = ("POST /tokenize", "POST /detokenize", "POST /v1/chat/completions/render")
MAX_TOKENS = 8


def bounded(body: Any) -> Any:
    """Cap the work a generated request asks for; invalid values are left as they are."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    for key in ("max_tokens", "max_completion_tokens", "min_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TOKENS:
            body[key] = MAX_TOKENS
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = MAX_TOKENS  # a random model rarely stops by itself
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 2:
        body["n"] = 2
    return body


class Outcomes:
    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.problems: list[str] = []

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def check(self, case: Any, response: Any) -> None:
        status = response.status_code
        self.statuses[status] += 1
        sent = json.dumps(case.body, default=str)[:300] if case.body is not None else ""
        where = f"{case.method} {case.path} -> {status}: {response.text[:300]!r} for {sent}"
        if status >= 500:
            self.problems.append(where)
            return
        if status >= 400:
            try:
                assert_error_shape(response.json(), status)
            except (AssertionError, ValueError):
                self.problems.append("not the error shape: " + where)


def fuzz(operation: Any, mode: GenerationMode, examples: int, base_url: str, out: Outcomes) -> None:
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=not FULL,  # CI: the same requests every run; full: new ones each time
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        if case.body is not None and case.operation.path == "/v1/chat/completions":
            case.body = bounded(case.body)  # the token routes generate nothing
        out.check(case, case.call(base_url=base_url, timeout=120))

    run()


def test_fuzz_the_openapi_document(tiny_server, figures):
    schema = schemathesis.openapi.from_url(f"{tiny_server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/chat/completions", *TOKEN_ROUTES} <= labels, labels
    out = Outcomes()
    for operation in operations:
        chat = operation.label == "POST /v1/chat/completions"
        tokens = operation.label in TOKEN_ROUTES
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if not (chat or tokens) and mode is GenerationMode.NEGATIVE:
                continue
            examples = CHAT_EXAMPLES if chat else TOKEN_EXAMPLES if tokens else OTHER_EXAMPLES
            fuzz(operation, mode, examples, tiny_server.base_url, out)
    ready = httpx.get(f"{tiny_server.base_url}/v1/health/ready").status_code
    figures.record(
        "fuzzing",
        requests=out.sent,
        by_status=dict(sorted(out.statuses.items())),
        server_errors=sum(n for s, n in out.statuses.items() if s >= 500),
        problems=len(out.problems),
        ready_after=ready,
    )
    assert not out.problems, "\n".join(out.problems[:20])
    assert ready == 200
    assert out.sent >= size(ci=250, full=2000)
    assert out.statuses[200] > 0, "no generated request was served: the fuzzing missed the engine"
