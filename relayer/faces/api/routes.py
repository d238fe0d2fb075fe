"""REST routes for the transaction builder: HTTP in, one `TransactionBuilder` call, JSON out.

Bodies are read with `relayer.faces.api.inputs.json_object` (JSON content type; exact `Decimal`s; NaN and
repeated keys refused), never through FastAPI's float-based parsing; the pydantic models in
`relayer.faces.api.schemas` only document the wire format.
Errors are `RelayerError`s, turned into HTTP answers once by `relayer.faces.api.errors`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from fastapi.types import DecoratedCallable
from pydantic import BaseModel

from relayer.errors import PositionNotFoundError, RelayerError
from relayer.faces.api import schemas
from relayer.faces.api.inputs import JSON_MEDIA_TYPE, json_object
from relayer.services.builder import TransactionBuilder
from relayer.services.builder_answers import markets_to_dict

router = APIRouter()


async def _builder(request: Request) -> TransactionBuilder:
    # async: FastAPI would run a plain `def` dependency in its thread pool, on every request.
    builder: TransactionBuilder = request.app.state.builder
    return builder


Builder = Annotated[TransactionBuilder, Depends(_builder)]


def _read(
    path: str, tag: str, summary: str, answer: type[BaseModel], *raised: type[RelayerError]
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """A GET route of this router: its OpenAPI tag and summary, the documented answer, what it raises."""
    return router.get(
        path,
        tags=[tag],
        summary=summary,
        response_model=answer,
        responses=schemas.error_responses(*raised),
    )


def _json(content: Any) -> Response:
    # Serialized here rather than by FastAPI's encoder: the core's dicts hold only str, int, bool and None.
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


@router.post(
    "/api/closeposition",
    tags=["transactions"],
    summary="Build a close / partial close / TP-SL transaction for the position's owner to sign",
    response_model=schemas.CloseResponseDoc,
    responses=schemas.error_responses(*schemas.BODY, *schemas.POSITION_CHECKS),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": schemas.CloseRequestDoc.model_json_schema(
                        ref_template="#/components/schemas/{model}"
                    ),
                    "examples": schemas.CLOSE_REQUEST_EXAMPLES,
                }
            },
        }
    },
)
async def close_position(request: Request) -> Response:
    """Checks the request against the chain (position, size, price freshness, slippage, trigger sides),
    simulates it from the owner, and returns the calldata, a signable `transaction`, the most it can cost
    (`requiredGasFee`, ETH) and a `preview` of the result at the current price."""
    # Served by `relayer.faces.api.hot_path` (the same `close_answer`) unless the request has a query string,
    # which `strict_query` refuses: this function answers only that, and documents the route.
    builder: TransactionBuilder = request.app.state.builder
    return Response(await close_answer(builder, await json_object(request)), media_type=JSON_MEDIA_TYPE)


async def close_answer(builder: TransactionBuilder, body: Mapping[str, Any]) -> bytes:
    """`POST /api/closeposition`'s answer to a decoded JSON body (raises the builder's `RelayerError`s)."""
    built = await builder.build_from_json(body)
    return json.dumps(built.to_dict(), separators=(",", ":")).encode()


@_read(
    "/api/positions/{positionId}",
    "positions",
    "One position, open or closed, with its market price and unrealized PnL",
    schemas.PositionDoc,
    PositionNotFoundError,
    *schemas.CHAIN,
)
async def get_position(positionId: str, builder: Builder) -> Response:  # noqa: N803 - the documented name
    return _json((await builder.position(positionId)).to_dict())


@_read(
    "/api/positions",
    "positions",
    "An owner's positions (open ones unless include_closed=true), oldest first",
    schemas.PositionsDoc,
    *schemas.CHAIN,
)
async def list_positions(
    builder: Builder,
    owner: Annotated[
        str, Query(description="0x address", examples=["0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"])
    ],
    include_closed: bool = False,
) -> Response:
    return _json((await builder.positions_of(owner, include_closed=include_closed)).to_dict())


@_read(
    "/api/markets", "markets", "Every market's oracle price and its age", schemas.MarketsDoc, *schemas.CHAIN
)
async def list_markets(builder: Builder) -> Response:
    return _json(markets_to_dict(await builder.markets()))


@_read(
    "/health",
    "health",
    "Whether the node answers: chain id, latest block, vault address (503 chain_unavailable if not)",
    schemas.HealthDoc,
    *schemas.CHAIN,
)
async def health(request: Request) -> Response:
    return _json(await request.app.state.runtime.health())
