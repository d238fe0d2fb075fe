"""The one mapping from `RelayerError` (and request-shape errors) to HTTP responses.

Every error body has the shape `{"error": {"code", "message", "details"}}`; nothing a client sends produces a
500 or a traceback. `install_error_handlers(app)` is called once by the app factory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException

from relayer.errors import (
    HttpRefusedError,
    InvalidFieldError,
    MethodNotAllowedError,
    RelayerError,
    RouteNotFoundError,
)

log = logging.getLogger("relayer.api")


def error_response(error: RelayerError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The one HTTP answer to an error: its status, its `envelope()` as the body, and `Retry-After` when a
    retry may succeed later: the error's own `details["retryAfterS"]` (a spent quota's reset, whole
    seconds), else 1 for a retryable 429 or 5xx."""
    response = JSONResponse(status_code=error.http_status, content=error.envelope())
    retry_after_s = error.details.get("retryAfterS")
    if isinstance(retry_after_s, int) and not isinstance(retry_after_s, bool) and retry_after_s >= 0:
        response.headers["Retry-After"] = str(retry_after_s)
    elif error.retryable and (error.http_status == HTTPStatus.TOO_MANY_REQUESTS or error.http_status >= 500):
        response.headers["Retry-After"] = "1"
    response.headers.update(headers or {})
    return response


_ROUTING_ERRORS: dict[int, Callable[[str], RelayerError]] = {
    404: RouteNotFoundError,
    405: MethodNotAllowedError,
}
"""The framework's own refusals (routing), as errors of the tree."""


async def _relayer_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RelayerError)
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    field = ".".join(str(part) for part in first.get("loc", ()) if part not in {"body", "query", "path"})
    return error_response(InvalidFieldError(field or "request", str(first.get("msg", "invalid"))))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    make = _ROUTING_ERRORS.get(exc.status_code)
    if make is not None:
        # The exception's headers go along, e.g. 405's `Allow`, which a client needs to recover: listing
        # every route of the path, not only the first one the router tried.
        headers = dict(exc.headers or {})
        if make is MethodNotAllowedError:
            headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
        return error_response(make(str(exc.detail)), headers)
    if exc.status_code < 500:  # the framework refused the request itself: a client error, kept as such
        response = error_response(HttpRefusedError(str(exc.detail)), exc.headers)
        response.status_code = exc.status_code
        return response
    return await _unexpected(request, exc)


def _allowed_methods(request: Request) -> list[str]:
    """The methods the app's routes (those of included routers too) take on this request's path, sorted."""
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        pattern = getattr(route, "path_regex", None)
        if route.methods and pattern is not None and pattern.match(path):
            methods |= route.methods
    return sorted(methods)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)  # the line names the request
    return error_response(RelayerError("internal error; see the server log"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RelayerError, _relayer_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
