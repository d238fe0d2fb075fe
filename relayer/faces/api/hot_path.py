"""`POST /api/closeposition` answered straight from ASGI: the route `scripts/bench.py build` measures.

The route reads its body by hand (`relayer.faces.api.inputs`: exact `Decimal`s, no float) and uses nothing
of FastAPI's validation, yet FastAPI's routing, dependency resolution (the app-wide `strict_query`) and
exception middleware took about a tenth of the server's CPU per request on it. `HotRoutes`, the innermost
middleware, answers a POST to exactly this path without a query string with the FastAPI route's own function
(`relayer.faces.api.routes.close_answer`), the same headers, and errors through the one mapping
(`relayer.faces.api.errors.error_response`): the answers are byte for byte the route's. Everything else goes
on to FastAPI, a query string included (which `strict_query` refuses there). The route stays registered, so
`/openapi.json` documents it and `RequestMetrics` labels it by its template; the middlewares outside this one
(request id, body size and deadline, metrics) see the request as before.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relayer.domain.jsonio import loads_object
from relayer.errors import ClientDisconnectedError, RelayerError
from relayer.faces.api.errors import error_response
from relayer.faces.api.inputs import JSON_MEDIA_TYPE, require_json
from relayer.faces.api.routes import close_answer

CLOSE_PATH = "/api/closeposition"
_JSON = JSON_MEDIA_TYPE.encode()


class HotRoutes:
    """The fast path of `POST /api/closeposition` (see the module); any other request goes to `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: APIRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != CLOSE_PATH
            or scope["method"] != "POST"
            or scope.get("query_string")
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        app = scope["app"]  # the FastAPI app (Starlette puts itself in the scope)
        route = self._route or self._find(app)
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # what routing would have set: `RequestMetrics` labels by it
        content_type = b""
        for key, value in scope["headers"]:  # the first one, as `Request.headers.get` reads it
            if key == b"content-type":
                content_type = value
                break
        try:
            require_json(content_type.decode("latin-1"))
            answer = await close_answer(app.state.builder, loads_object(await _body(receive)))
        except RelayerError as error:
            await error_response(error)(scope, receive, send)
            return
        headers = [(b"content-length", str(len(answer)).encode()), (b"content-type", _JSON)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def _find(self, app: Any) -> APIRoute | None:
        for context in iter_route_contexts(app.routes):
            route = context.original_route  # what routing puts in the scope
            if isinstance(route, APIRoute) and route.path == CLOSE_PATH and "POST" in (route.methods or ()):
                self._route = route
                return route
        return None


async def _body(receive: Receive) -> bytes:
    """The whole request body (its size and deadline are bounded by `RequestGuard`'s `receive`).

    Raises:
        ClientDisconnectedError: the client left before the body ended.
    """
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnectedError("the client hung up before its request body arrived")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
