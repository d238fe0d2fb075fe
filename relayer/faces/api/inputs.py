"""Reading a request's inputs: the one set of rules for every route's JSON body and query string.

A body must be declared JSON (`Content-Type: application/json`, parameters such as `charset` allowed) and is
parsed exactly by `relayer.domain.jsonio.loads_object` (numbers as `Decimal`; NaN and repeated keys refused).
A query string may only name the route's own parameters, each once: `?includeClosed=true` (for
`include_closed`) or `?offset=1&offset=2` is refused, never ignored or resolved by guessing which one was
meant.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from relayer.domain.jsonio import loads_object
from relayer.errors import InvalidFieldError, UnsupportedMediaTypeError

JSON_MEDIA_TYPE = "application/json"

KEY_HEADERS: dict[str, Any] = {
    "parameters": [
        {"name": "Authorization", "in": "header", "schema": {"type": "string"}, "example": "Bearer vrk_..."},
        {"name": "X-API-Key", "in": "header", "schema": {"type": "string"}},
    ]
}
"""OpenAPI `openapi_extra` of a route taking an API key (read by `api_key_of`, checked by the service)."""


def api_key_of(request: Request) -> str | None:
    """The presented key, from `Authorization: Bearer` or `X-API-Key` (None when neither is there)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key")


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises:
        UnsupportedMediaTypeError: the content type is missing or not `application/json` (415).
        InvalidFieldError: the body is not a JSON object, or breaks `loads_object`'s rules (422).
    """
    given = request.headers.get("content-type", "")
    require_json(given)
    return loads_object(await request.body())


def require_json(content_type: str) -> None:
    """Refuse a body not declared JSON (`json_object`'s rule, for a route reading its body from ASGI).

    Raises:
        UnsupportedMediaTypeError: `content_type` is missing or not `application/json` (415).
    """
    if content_type.split(";", 1)[0].strip().lower() != JSON_MEDIA_TYPE:
        raise UnsupportedMediaTypeError(content_type)


async def strict_query(request: Request) -> None:
    """An app-wide dependency: refuse query parameters the route does not have, and any given twice.

    Raises:
        InvalidFieldError: naming the unknown or repeated parameter (422).
    """
    if not request.query_params:
        return
    route = request.scope.get("route")
    allowed = _declared(route.dependant) if isinstance(route, APIRoute) else set()
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise InvalidFieldError(name[:80], "is given more than once in the query string")
        if name not in allowed:
            listed = ", ".join(sorted(allowed)) or "none"
            raise InvalidFieldError(name[:80], f"is not a query parameter here (parameters: {listed})")
        seen.add(name)


def _declared(dependant: Dependant) -> set[str]:
    """The query parameters of a route and of every dependency it has, by their wire names."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _declared(sub)
    return names
