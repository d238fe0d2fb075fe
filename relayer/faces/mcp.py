"""The MCP tool server for AI agents: each tool adapts its arguments to one `TradingService` call.

Results are the same JSON the REST trading routes answer. Every failure comes back as an MCP tool error whose
text is the REST error body (`{"error": {"code", "message", "details"}}`), so an agent reads the same stable
codes a REST client does: a refused argument is `invalid_field` naming it, a call without a key is
`unauthenticated`. Arguments are taken exactly as the tool's schema declares them: an unknown name is
refused (a REST spelling such as `sizeDelta` must not be dropped, leaving a close of everything), and so is a
value of another JSON type. Prices and sizes are decimal strings (or integers): a JSON float cannot carry
money exactly.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from io import TextIOWrapper
from typing import Annotated, Any, cast

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp.types import CallToolResult, InputRequiredResult, JSONRPCError, TextContent
from pydantic import ConfigDict, Field, ValidationError

from relayer import __version__
from relayer.domain.jsonio import loads_exact, reject_unknown_fields
from relayer.errors import InvalidFieldError, RelayerError
from relayer.services.trading import DEFAULT_EXIT_PCT, TradeOutcome, TradingService

log = logging.getLogger("relayer.mcp")

SERVER_NAME = "vault-relayer"
API_KEY = "api_key"
"""The credential every tool takes; absent or null, it reaches the service as no key (`unauthenticated`)."""

INSTRUCTIONS = """\
Manage perpetual-futures positions on the vault through the relayer. Every tool needs `api_key` (a
`vrk_...` key): reading tools need the `read` scope, tools that change a position need `trade`. Sizes are
base-asset units (e.g. BTC), prices are USD; pass them as decimal strings such as "96200.5". Arguments are
checked exactly: an argument the tool does not list, or a value of another type (33.5 or "33" for an integer),
is refused with `invalid_field` naming it. Trading tools wait for the block and report the fill the chain
recorded; if it takes too long they answer with `status` "submitted" and a `transactionId` to poll with
get_transaction. Errors are JSON with a stable `code` (e.g. `ambiguous_position`: give `side` or
`position_id`; `operator_not_approved`: the account must approve the relayer first)."""

ApiKey = Annotated[str, Field(description="API key (vrk_...) of the trading account")]
PositionId = Annotated[str, Field(description="position id, 0x + 64 hex digits (see get_positions)")]
Price = Annotated[str | int, Field(description='USD price as a decimal string, e.g. "96200.5"')]
IdempotencyKey = Annotated[
    str | None, Field(description="retry-safe id of this request: the same key returns the first answer")
]
"""Bounds are not repeated in the schema: the service checks them, so an agent gets the same JSON errors."""

FieldNames = Mapping[str, str]
"""One tool's argument names (as an agent writes them) to the REST body's field names, the one table both
ways: it builds the service body from the arguments, and names the argument back when a field is refused."""

PARTIAL_CLOSE_FIELDS: FieldNames = {
    "symbol": "symbol",
    "exit_pct": "exit_pct",
    "side": "side",
    "position_id": "positionId",
    "allowed_price": "allowedPrice",
    "max_slippage_bps": "maxSlippageBps",
    "dry_run": "dry_run",
}
CLOSE_POSITION_FIELDS: FieldNames = {
    "position_id": "positionId",
    "size_delta": "sizeDelta",
    "allowed_price": "allowedPrice",
    "max_slippage_bps": "maxSlippageBps",
    "dry_run": "dry_run",
}
TRIGGER_FIELDS: FieldNames = {
    "position_id": "positionId",
    "price": "price",
    "close_pct": "close_pct",
    "dry_run": "dry_run",
}
BREAKEVEN_FIELDS: FieldNames = {"position_id": "positionId", "dry_run": "dry_run"}
GET_POSITIONS_FIELDS: FieldNames = {"symbol": "symbol"}
GET_TRANSACTION_FIELDS: FieldNames = {"transaction_id": "transactionId"}

_JSON_TYPE_NAMES = {"string": "a string", "integer": "an integer", "boolean": "true or false"}


# --- results ------------------------------------------------------------------------------------------------


def _error_result(error: RelayerError) -> CallToolResult:
    """The one shape of a failed call: an error result whose text is exactly the REST error body.

    Built here rather than by raising `ToolError`: the SDK prefixes a raised error's text with
    "Error executing tool <name>: ", and an agent must be able to parse the text as JSON.
    """
    text = json.dumps({"error": error.to_dict()}, default=str)
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _as_argument(error: RelayerError, fields: FieldNames) -> RelayerError:
    """`error` naming the tool's argument where the service named a REST field the tool spells otherwise."""
    if not isinstance(error, InvalidFieldError):
        return error
    renamed = [argument for argument, field in fields.items() if field == error.field and argument != field]
    return error.renamed(renamed[0]) if renamed else error


TradingProvider = Callable[[], TradingService]
"""Gives the service when a tool runs (the server is built before the runtime that holds it). On a server
without relayer signers the reading tools work; the service answers `relay_not_configured` to the others."""

ToolResult = Annotated[CallToolResult, dict[str, Any]]
"""What every tool returns: a JSON object (also as structured content), or an error result."""


async def _run(
    provider: TradingProvider,
    call: Callable[[TradingService], Awaitable[TradeOutcome | dict[str, Any]]],
    fields: FieldNames,
) -> CallToolResult:
    """One tool call: every `RelayerError` becomes a tool error whose text is exactly the REST error body."""
    try:
        result = await call(provider())
    except RelayerError as error:
        return _error_result(_as_argument(error, fields))
    body = result.body if isinstance(result, TradeOutcome) else result
    text = json.dumps(body, default=str)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=body)


def _body(fields: FieldNames, **arguments: Any) -> dict[str, Any]:
    """The REST body of a call: each given argument under its REST name (None: not given)."""
    return {fields[name]: value for name, value in arguments.items() if value is not None}


# --- arguments ----------------------------------------------------------------------------------------------


class _ExactArguments(FuncMetadata):
    """A tool's argument model that takes the arguments as sent: strict JSON types, no unknown names, and no
    string re-read as JSON (the SDK's default would turn the string "null" into an absent argument)."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        return data


def _exact(tool: Tool) -> Tool:
    """`tool` with exact arguments, and a schema that says so (`additionalProperties: false`)."""
    loose = tool.fn_metadata
    model = cast(
        type[ArgModelBase],
        type(
            loose.arg_model.__name__,
            (loose.arg_model,),
            {"model_config": ConfigDict(strict=True, extra="forbid"), "__module__": __name__},
        ),
    )
    exact = _ExactArguments(
        arg_model=model,
        output_schema=loose.output_schema,
        output_model=loose.output_model,
        wrap_output=loose.wrap_output,
    )
    return tool.model_copy(
        update={"fn_metadata": exact, "parameters": model.model_json_schema(by_alias=True)}
    )


def _json_types(schema: Mapping[str, Any]) -> list[str]:
    """The JSON types a property's schema admits, `null` left out (omitting the argument says that)."""
    if "anyOf" in schema:
        return [kind for option in schema["anyOf"] for kind in _json_types(option)]
    kind = schema.get("type")
    return [kind] if isinstance(kind, str) and kind != "null" else []


def _checked(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call to `tool`, checked against its schema before it runs.

    Raises:
        InvalidFieldError: an argument the tool does not have (listing the ones it has, exactly as REST
            refuses an unknown body field), a missing one, or one of another JSON type; `details.field` names
            it.
    """
    properties: dict[str, Any] = tool.parameters.get("properties", {})
    reject_unknown_fields(arguments, tuple(properties))
    if API_KEY in properties and arguments.get(API_KEY) is None:
        arguments = {**arguments, API_KEY: ""}  # no key: the service's authentication answers 401
    try:
        tool.fn_metadata.validate_arguments(arguments)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "arguments"
        if first["type"] == "missing":
            raise InvalidFieldError(name, "is required") from None
        expected = " or ".join(
            _JSON_TYPE_NAMES.get(kind, kind) for kind in _json_types(properties.get(name, {}))
        )
        raise InvalidFieldError(name, f"must be {expected or 'another type'}") from None
    return arguments


class _RelayerMCPServer(MCPServer):
    """An MCP server whose every tool call answers a failure with the REST error body.

    Arguments are checked here, before the SDK's own validation (the same exact model, so it cannot then
    refuse them in its own words); a crash in a tool answers `internal_error`, as REST does.
    """

    def __init__(self, tools: list[Tool]) -> None:
        exact = [_exact(tool) for tool in tools]
        super().__init__(name=SERVER_NAME, version=__version__, instructions=INSTRUCTIONS, tools=exact)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)
        try:
            if tool is None:
                names = ", ".join(t.name for t in self._tool_manager.list_tools())
                raise InvalidFieldError("name", f"is not a tool of this server (tools: {names})")
            checked = _checked(tool, arguments)
        except RelayerError as error:
            return _error_result(error)
        try:
            return await super().call_tool(name, checked, context)
        except UnexpectedToolError:
            log.exception("mcp tool=%s failed unexpectedly", name)
            return _error_result(RelayerError("internal error; see the server log"))

    async def run_stdio_async(self) -> None:
        """Serve on stdin/stdout as the SDK does, with every incoming line held to the exact JSON rules first
        (`refusal_of`): the SDK's parser keeps the last of two equal keys, so `"dry_run": true, "dry_run":
        false` would otherwise run a real trade. A refused line is answered with the JSON-RPC error on the
        same output; the rest pass on untouched. stdout stays the SDK's (stray prints go to stderr)."""
        stdin = TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        lines = _ExactLines(anyio.wrap_file(stdin))
        async with stdio_server(stdin=cast(anyio.AsyncFile[str], lines)) as (read_stream, write_stream):
            lines.answer_to(write_stream)
            lowlevel = self._lowlevel_server  # as `MCPServer.run_stdio_async` runs it
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


# --- messages the SDK would read its own way ----------------------------------------------------------------

PARSE_ERROR = -32700
"""JSON-RPC's code for a message that could not be read (here: not under our exact JSON rules)."""


def refusal_of(message: str | bytes) -> dict[str, Any] | None:
    """The JSON-RPC error answering an incoming MCP message that `relayer.domain.jsonio.loads_exact` refuses
    (a key given twice, NaN, nesting past the limit, not JSON), or None when the message may pass to the SDK.

    `error.data` is the REST error body (`invalid_field` naming the key), so an agent reads the same code as
    everywhere. The request's `id` is answered when the message names one unambiguously (a repeated `id`
    cannot be trusted: then `null`, as JSON-RPC prescribes for an unreadable request).
    """
    try:
        loads_exact(message)
    except InvalidFieldError as error:
        return {
            "jsonrpc": "2.0",
            "id": None if error.field in {"id", "body"} else _request_id(message),
            "error": {"code": PARSE_ERROR, "message": error.message, "data": {"error": error.to_dict()}},
        }
    return None


def _request_id(message: str | bytes) -> str | int | None:
    """The `id` of a message that is JSON but for a repeated key elsewhere (read the lenient way)."""
    parsed = json.loads(message)
    request_id = parsed.get("id") if isinstance(parsed, dict) else None
    return request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None


class _ExactLines:
    """The lines of stdin for the SDK's stdio transport, minus those `refusal_of` refuses: each of those is
    answered on the transport's own write stream (so answers never interleave on stdout)."""

    def __init__(self, source: anyio.AsyncFile[str]) -> None:
        self._source = source
        self._answers: Any = None

    def answer_to(self, write_stream: Any) -> None:
        self._answers = write_stream

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for line in self._source:
            refusal = None if not line.strip() else refusal_of(line)
            if refusal is None:
                yield line
            elif self._answers is not None:
                await self._answers.send(SessionMessage(JSONRPCError.model_validate(refusal)))


# --- the tools ----------------------------------------------------------------------------------------------


def build_mcp_server(trading: TradingProvider) -> MCPServer:
    """An MCP server exposing the trading tools over `trading()` (serve it on stdio or mount it over HTTP)."""

    async def partial_close(
        symbol: Annotated[str, Field(description="market symbol, e.g. BTCUSDT")],
        api_key: ApiKey,
        exit_pct: Annotated[int, Field(description="percent of the position to close, 1-100")] = (
            DEFAULT_EXIT_PCT
        ),
        side: Annotated[str | None, Field(description="long or short")] = None,
        position_id: PositionId | None = None,
        allowed_price: Price | None = None,
        max_slippage_bps: Annotated[int | None, Field(description="0-9999 basis points")] = None,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        body = _body(
            PARTIAL_CLOSE_FIELDS,
            symbol=symbol,
            exit_pct=exit_pct,
            side=side,
            position_id=position_id,
            allowed_price=allowed_price,
            max_slippage_bps=max_slippage_bps,
            dry_run=dry_run,
        )
        return await _run(
            trading,
            lambda t: t.partial_close(api_key, body, idempotency_key=idempotency_key),
            PARTIAL_CLOSE_FIELDS,
        )

    async def close_position(
        position_id: PositionId,
        api_key: ApiKey,
        size_delta: Annotated[str | int | None, Field(description="base units to close; omit: all")] = None,
        allowed_price: Price | None = None,
        max_slippage_bps: Annotated[int | None, Field(description="0-9999 basis points")] = None,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        body = _body(
            CLOSE_POSITION_FIELDS,
            position_id=position_id,
            size_delta=size_delta,
            allowed_price=allowed_price,
            max_slippage_bps=max_slippage_bps,
            dry_run=dry_run,
        )
        return await _run(
            trading,
            lambda t: t.close_position(api_key, body, idempotency_key=idempotency_key),
            CLOSE_POSITION_FIELDS,
        )

    def trigger_tool(is_take_profit: bool) -> Callable[..., Awaitable[ToolResult]]:
        async def set_trigger(
            position_id: PositionId,
            price: Price,
            api_key: ApiKey,
            close_pct: Annotated[
                int | None, Field(description="percent of the position to close, 1-100 (default 100)")
            ] = None,
            dry_run: bool = False,
            idempotency_key: IdempotencyKey = None,
        ) -> ToolResult:
            body = _body(
                TRIGGER_FIELDS, position_id=position_id, price=price, close_pct=close_pct, dry_run=dry_run
            )
            return await _run(
                trading,
                lambda t: t.set_trigger(
                    api_key, body, is_take_profit=is_take_profit, idempotency_key=idempotency_key
                ),
                TRIGGER_FIELDS,
            )

        return set_trigger

    async def move_to_breakeven(
        position_id: PositionId,
        api_key: ApiKey,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        body = _body(BREAKEVEN_FIELDS, position_id=position_id, dry_run=dry_run)
        return await _run(
            trading,
            lambda t: t.move_to_breakeven(api_key, body, idempotency_key=idempotency_key),
            BREAKEVEN_FIELDS,
        )

    async def get_positions(api_key: ApiKey, symbol: str | None = None) -> ToolResult:
        return await _run(trading, lambda t: t.get_positions(api_key, symbol), GET_POSITIONS_FIELDS)

    async def get_transaction(transaction_id: str, api_key: ApiKey) -> ToolResult:
        return await _run(
            trading, lambda t: t.get_transaction(api_key, transaction_id), GET_TRANSACTION_FIELDS
        )

    def trigger_description(order: str, side_long: str, side_short: str) -> str:
        return (
            f"Set or replace the position's {order} (scope: trade): when the oracle price reaches price, "
            f"the keeper closes close_pct percent of the position. Must be {side_long} the current price "
            f'for a long, {side_short} for a short. price "0" cancels it.'
        )

    tools = [
        Tool.from_function(
            partial_close,
            description=(
                "Close a percentage of the account's position in a market at the oracle price (scope: "
                "trade). exit_pct 1-100 (default 50; 100 closes all). If the account has both a long and a "
                "short in the market, give side or position_id. The price is bounded: allowed_price (worst "
                "USD exit price), or max_slippage_bps from the current price, or the server's default guard. "
                "dry_run simulates and sends nothing. Returns closed_qty, remaining_qty, exit_price, "
                "realized_pnl_usd, remaining_unrealized_pnl_usd as exact decimal strings."
            ),
        ),
        Tool.from_function(
            close_position,
            description=(
                "Close a position fully, or by size_delta base-asset units (scope: trade). allowed_price is "
                "the worst USD exit price (long: minimum, short: maximum); without it the server's slippage "
                "guard applies. Returns the fill the chain recorded."
            ),
        ),
        Tool.from_function(
            trigger_tool(True),
            name="set_take_profit",
            description=trigger_description("take-profit", "above", "below"),
        ),
        Tool.from_function(
            trigger_tool(False),
            name="set_stop_loss",
            description=trigger_description("stop-loss", "below", "above"),
        ),
        Tool.from_function(
            move_to_breakeven,
            description=(
                "Move the stop-loss to the entry price for the full size (scope: trade), locking in a "
                "no-loss exit. Only possible while the trade is in profit (price beyond entry in its "
                "favour); otherwise an invalid_trigger_price error explains why."
            ),
        ),
        Tool.from_function(
            get_positions,
            description=(
                "List the account's open positions (scope: read), optionally for one market: size, entry and "
                "current price, unrealized PnL in USD, take-profit and stop-loss orders."
            ),
        ),
        Tool.from_function(
            get_transaction,
            description=(
                "The status of a relayed transaction by id (scope: read): queued, submitted, mined, "
                "confirmed, failed (with the decoded reason), replaced or expired, with every hash it had "
                "and its receipt."
            ),
        ),
    ]
    return _RelayerMCPServer(tools)
