"""The chat route's JSON reading: what Python's json module accepts but JSON does not."""

from __future__ import annotations

import pytest

from nimctl.api.chat import parse_json_object
from nimctl.errors import BadRequestError


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


def test_valid_unicode_and_numbers_pass():
    payload = parse_json_object(b'{"a": "\\ud83d\\ude00 \\u00e9", "t": 0.7, "n": 1e308}')
    assert payload == {"a": "\U0001f600 \u00e9", "t": 0.7, "n": 1e308}
