"""Every error a client can see leaves in the one JSON error shape, 500s included."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from nimctl.api.state import app_state
from nimctl.errors import NimError, Refusal, TooManyRequestsError, error_body
from nimctl.validation_errors import framework_request_error

logger = logging.getLogger("nimctl.api")


def install_error_handlers(app: FastAPI) -> None:
    # Starlette types a handler as taking any Exception; it calls each with the class it is for.
    app.add_exception_handler(NimError, _nim_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, _client_left)
    app.add_exception_handler(Exception, _unexpected_error)


def error_response(exc: NimError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers() or None)


async def _nim_error(request: Request, exc: NimError) -> JSONResponse:
    # Refusals are counted here, wherever they were raised.
    if isinstance(exc, Refusal):
        app_state(request).metrics.count_refusal(exc)
    elif isinstance(exc, TooManyRequestsError):
        app_state(request).metrics.requests_rejected.labels(exc.reason).inc()
    return error_response(exc)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    status = HTTPStatus(exc.status_code)
    message = exc.detail if isinstance(exc.detail, str) else status.phrase
    if status is HTTPStatus.NOT_FOUND:
        message = f"Not found: {request.method} {request.url.path}"
    elif status is HTTPStatus.METHOD_NOT_ALLOWED:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    error_type = status.phrase.replace(" ", "") + "Error"
    return JSONResponse(
        error_body(message, error_type, status.value),
        status_code=status.value,
        headers=getattr(exc, "headers", None),
    )


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """A typed route parameter FastAPI refused: read as the request path's own refusals."""
    return error_response(framework_request_error(exc.errors(), exc.body))


async def _client_left(request: Request, _: Exception) -> Response:
    """The client went away while its body was being read: one line, nothing to answer.

    Starlette raises ClientDisconnect from `request.body()`; unhandled, it would be logged
    (twice) with a traceback and counted as a 500. 499 is nginx's "client closed request",
    as the chat route counts a client that leaves while its answer is computed.
    """
    logger.info(
        "client left before its request was complete: %s %s", request.method, request.url.path
    )
    return Response(status_code=499)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body("Internal server error; see the server log.", "InternalServerError", 500),
        status_code=500,
    )
