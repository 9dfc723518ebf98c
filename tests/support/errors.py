"""NIM's error JSON, as every test checks it."""

from __future__ import annotations

from typing import Any


def assert_error_shape(body: Any, status: int) -> dict[str, Any]:
    """Exactly {"error": {message, type, param, code}}, code = the HTTP status, and a message
    that says something; returns the error object."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert error["code"] == status, body
    assert isinstance(error["message"], str) and error["message"].strip(), body
    return error
