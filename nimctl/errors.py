"""One error hierarchy, one JSON shape.

Every refusal nimctl emits, and every error vLLM raises, reaches the client as
``{"error": {"message", "type", "param", "code"}}`` — the shape vLLM's own server returns, so
clients that already parse vLLM/NIM errors need no change. The status lives on the class so that
raising code never has to pick a number.
"""

from __future__ import annotations

from typing import Any


class NimError(Exception):
    """A failure that maps to one HTTP status and one error body."""

    status: int = 500
    error_type: str = "InternalServerError"
    # The answer ends the connection: what the client would send next cannot be trusted.
    closes_connection: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status
        if error_type is not None:
            self.error_type = error_type

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.status, self.param)

    def headers(self) -> dict[str, str]:
        """Response headers that go with this answer."""
        return {"connection": "close"} if self.closes_connection else {}


class BadRequestError(NimError):
    status = 400
    error_type = "BadRequestError"


class Refusal(BadRequestError):
    """A request refused before the engine: a documented rule of the model broken (`kind`
    "rule"), or a media part that cannot be used (`kind` "media"). `reason` is a stable code that
    labels nimctl's refusal metrics, counted where the refusal becomes a response; `fix` says
    what to change."""

    kind: str = "rule"

    def __init__(self, reason: str, message: str, fix: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.reason = reason
        self.fix = fix


class AuthenticationError(NimError):
    status = 401
    error_type = "AuthenticationError"


class NotFoundError(NimError):
    status = 404
    error_type = "NotFoundError"


class RequestTimeoutError(NimError):
    """The client did not send its request in time (a stalled body or head)."""

    status = 408
    error_type = "RequestTimeoutError"
    closes_connection = True


class PayloadTooLargeError(NimError):
    status = 413
    error_type = "PayloadTooLargeError"


class UriTooLongError(NimError):
    status = 414
    error_type = "URITooLongError"
    closes_connection = True


class HeaderFieldsTooLargeError(NimError):
    status = 431
    error_type = "RequestHeaderFieldsTooLargeError"
    closes_connection = True


class TooManyRequestsError(NimError):
    """The replica has taken on all it may (admission control): retry after a pause. `reason`
    (the limit reached) labels `nimctl_requests_rejected_total`, counted where it becomes a
    response."""

    status = 429
    error_type = "TooManyRequestsError"

    def __init__(self, message: str, reason: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class ServiceUnavailableError(NimError):
    status = 503
    error_type = "ServiceUnavailableError"


def error_body(
    message: str, error_type: str, code: int, param: str | None = None
) -> dict[str, dict[str, str | int | None]]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class ConfigError(Exception):
    """A setting or profile that cannot work; start-up stops with this one-line message."""
