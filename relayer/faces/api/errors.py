"""The one mapping from `RelayerError` (and request-shape errors) to HTTP responses.

Every error body has the shape `{"error": {"code", "message", "details"}}`; nothing a client sends produces a
500 or a traceback. `install_error_handlers(app)` is called once by the app factory.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from relayer.errors import RelayerError
from relayer.faces.api.middleware import request_id

log = logging.getLogger("relayer.faces.api")


def error_response(
    status: int, code: str, message: str, details: dict[str, object] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message, "details": details or {}}}
    )


async def _relayer_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RelayerError)
    headers = {"Retry-After": "1"} if exc.retryable and exc.http_status >= 500 else None
    response = error_response(exc.http_status, exc.code, exc.message, exc.details)
    if headers:
        response.headers.update(headers)
    return response


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    field = ".".join(str(part) for part in first.get("loc", ()) if part not in {"body", "query", "path"})
    message = f"{field or 'request'}: {first.get('msg', 'invalid')}"
    return error_response(422, "invalid_field", message, {"field": field})


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. 405's `Allow`, which a client needs to recover
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request=%s unhandled error on %s %s", request_id.get(), request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RelayerError, _relayer_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
