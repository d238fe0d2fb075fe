"""The MCP trading tools: each adapts its arguments to one `TradingService` call, and its result or error to a
tool result. The server that checks their arguments and speaks the protocol is `relayer.faces.mcp`.

Results are the same JSON the REST trading routes answer; a failure is an error result whose text is the REST
error body (`RelayerError.envelope()`), naming the tool's argument where the service named a REST field.
Prices and sizes are decimal strings (or integers): a JSON float cannot carry money exactly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from relayer.constants import MAX_SLIPPAGE_BPS
from relayer.errors import InvalidFieldError, RelayerError
from relayer.services.trading import (
    DEFAULT_FILLS_PAGE,
    MAX_FILLS_PAGE,
    PROGRESS_STEPS,
    Progress,
    TradingService,
)
from relayer.services.trading_answers import TradeOutcome
from relayer.services.trading_requests import DEFAULT_EXIT_PCT

logger = logging.getLogger(__name__)

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
MaxSlippageBps = Annotated[int | None, Field(description=f"0-{MAX_SLIPPAGE_BPS} basis points")]
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
GET_RECENT_FILLS_FIELDS: FieldNames = {"after": "after", "limit": "limit"}

TradingProvider = Callable[[], TradingService]
"""Gives the service when a tool runs (the server is built before the runtime that holds it). On a server
without relayer signers the reading tools work; the service answers `relay_not_configured` to the others."""

TRANSPORT_FAILURES = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
    MCPError,
)
"""What telling progress raises when the client is gone: a closed or broken stream, a broken pipe or reset
connection, or the SDK's `CONNECTION_CLOSED` (other `MCPError` codes are not transport failures)."""

ToolResult = Annotated[CallToolResult, dict[str, Any]]
"""What every tool returns: a JSON object (also as structured content), or an error result."""


# --- results ------------------------------------------------------------------------------------------------


def error_result(error: RelayerError) -> CallToolResult:
    """The one shape of a failed call: an error result whose text is exactly the REST error body.

    Built here rather than by raising `ToolError`: the SDK prefixes a raised error's text with
    "Error executing tool <name>: ", and an agent must be able to parse the text as JSON.
    """
    text = json.dumps(error.envelope(), default=str)
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _as_argument(error: RelayerError, fields: FieldNames) -> RelayerError:
    """`error` naming the tool's argument where the service named a REST field the tool spells otherwise."""
    if not isinstance(error, InvalidFieldError):
        return error
    renamed = [argument for argument, field in fields.items() if field == error.field and argument != field]
    return error.renamed(renamed[0]) if renamed else error


async def _run(
    provider: TradingProvider,
    call: Callable[[TradingService], Awaitable[TradeOutcome | dict[str, Any]]],
    fields: FieldNames,
) -> CallToolResult:
    """One tool call: every `RelayerError` becomes a tool error whose text is exactly the REST error body."""
    try:
        result = await call(provider())
    except RelayerError as error:
        return error_result(_as_argument(error, fields))
    body = result.body if isinstance(result, TradeOutcome) else result
    text = json.dumps(body, default=str)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=body)


def _progress(ctx: Context[Any, Any]) -> Progress:
    """A close's steps as MCP progress notifications (`notifications/progress`; nothing is sent when the
    client gave no `progressToken`).

    Best effort: progress is told while the close goes on, so a client that is gone (its transport fails)
    must not turn a transaction already sent into an error; the failure is logged at debug and the tool
    still answers with the fill. Any other failure is a bug and raises.
    """

    async def tell(step: int, message: str) -> None:
        try:
            await ctx.report_progress(step, PROGRESS_STEPS, message)
        except TRANSPORT_FAILURES as failure:
            if isinstance(failure, MCPError) and failure.code != CONNECTION_CLOSED:
                raise
            logger.debug(
                "progress %d/%d not told: the client's transport failed (%r)",
                step,
                PROGRESS_STEPS,
                failure,
            )

    return tell


def _body(fields: FieldNames, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The REST body of a call: each argument in `fields` under its REST name (None: not given).

    `arguments` is the tool function's `locals()`, taken first thing: its parameters (`api_key` and
    `idempotency_key` are not body fields). A test checks that every tool's table lists all its other
    arguments."""
    return {field: arguments[name] for name, field in fields.items() if arguments[name] is not None}


# --- the tools ----------------------------------------------------------------------------------------------

CLOSES = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
)
"""partial_close, close_position: each call closes (part of) a position on chain, for good; the same
arguments again close again (an `idempotency_key` makes a retry safe, but the tool is not idempotent)."""
SETS_AN_ORDER = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
)
"""set_take_profit, set_stop_loss, move_to_breakeven: replace the position's order (the old one is gone);
the same arguments again leave the same order."""
READS = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)
"""get_positions, get_transaction, get_recent_fills: read the chain and the journal, change nothing."""


def trading_tools(trading: TradingProvider) -> list[Tool]:
    """The tools, each calling `trading()` when it runs."""

    async def partial_close(
        symbol: Annotated[str, Field(description="market symbol, e.g. BTCUSDT")],
        api_key: ApiKey,
        exit_pct: Annotated[int, Field(description="percent of the position to close, 1-100")] = (
            DEFAULT_EXIT_PCT
        ),
        side: Annotated[str | None, Field(description="long or short")] = None,
        position_id: PositionId | None = None,
        allowed_price: Price | None = None,
        max_slippage_bps: MaxSlippageBps = None,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
        *,
        ctx: Context[Any, Any],
    ) -> ToolResult:
        body = _body(PARTIAL_CLOSE_FIELDS, locals())
        return await _run(
            trading,
            lambda t: t.partial_close(
                api_key, body, idempotency_key=idempotency_key, progress=_progress(ctx)
            ),
            PARTIAL_CLOSE_FIELDS,
        )

    async def close_position(
        position_id: PositionId,
        api_key: ApiKey,
        size_delta: Annotated[
            str | int | None, Field(description='base-asset units to close, e.g. "0.25" BTC; omit: all')
        ] = None,
        allowed_price: Price | None = None,
        max_slippage_bps: MaxSlippageBps = None,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
        *,
        ctx: Context[Any, Any],
    ) -> ToolResult:
        body = _body(CLOSE_POSITION_FIELDS, locals())
        return await _run(
            trading,
            lambda t: t.close_position(
                api_key, body, idempotency_key=idempotency_key, progress=_progress(ctx)
            ),
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
            body = _body(TRIGGER_FIELDS, locals())
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
        body = _body(BREAKEVEN_FIELDS, locals())
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

    async def get_recent_fills(
        api_key: ApiKey,
        after: Annotated[
            str | None, Field(description="continue after this cursor (an earlier answer's `cursor`)")
        ] = None,
        limit: Annotated[int, Field(description=f"fills at most, 1-{MAX_FILLS_PAGE}")] = DEFAULT_FILLS_PAGE,
    ) -> ToolResult:
        return await _run(trading, lambda t: t.recent_fills(api_key, after, limit), GET_RECENT_FILLS_FIELDS)

    def trigger_description(order: str, side_long: str, side_short: str) -> str:
        return (
            f"Set or replace the position's {order} (scope: trade): when the oracle price reaches price "
            f"(USD), the keeper closes close_pct percent (1-100, default 100) of the position. Must be "
            f'{side_long} the current price for a long, {side_short} for a short. price "0" cancels it. '
            "Setting the same order again changes nothing more; idempotency_key makes a retry return the "
            "first answer instead of sending again."
        )

    return [
        Tool.from_function(
            partial_close,
            description=(
                "Close a percentage of the account's position in a market at the oracle price (scope: "
                "trade). exit_pct is a percent of the position, 1-100 (default 50; 100 closes all). If "
                "the account has both a long and a short in the market, give side or position_id. The price "
                "is bounded: allowed_price (worst exit price, USD), or max_slippage_bps (basis points, "
                "1 = 0.01%) from the current price, or the server's default guard. dry_run simulates and "
                "sends nothing. Returns closed_qty and remaining_qty (base-asset units, e.g. BTC), "
                "exit_price (USD), realized_pnl_usd and remaining_unrealized_pnl_usd (USD), as exact "
                "decimal strings. Each call closes again: pass idempotency_key to make a retry return the "
                "first answer. Sends progress notifications (simulated, journaled, mined) when the call "
                "carries a progressToken."
            ),
            annotations=CLOSES,
        ),
        Tool.from_function(
            close_position,
            description=(
                "Close a position fully, or by size_delta (base-asset units, e.g. BTC) (scope: trade). "
                "allowed_price is the worst exit price in USD (long: minimum, short: maximum); "
                "max_slippage_bps is basis points from the current price; without either the server's "
                "slippage guard applies. Returns the fill the chain recorded (quantities in base-asset "
                "units, prices and PnL in USD); pass idempotency_key to make a retry return the first "
                "answer; progress notifications as for partial_close."
            ),
            annotations=CLOSES,
        ),
        Tool.from_function(
            trigger_tool(True),
            name="set_take_profit",
            description=trigger_description("take-profit", "above", "below"),
            annotations=SETS_AN_ORDER,
        ),
        Tool.from_function(
            trigger_tool(False),
            name="set_stop_loss",
            description=trigger_description("stop-loss", "below", "above"),
            annotations=SETS_AN_ORDER,
        ),
        Tool.from_function(
            move_to_breakeven,
            description=(
                "Move the stop-loss to the entry price (USD) for the full size (scope: trade), locking in a "
                "no-loss exit. Only possible while the trade is in profit (price beyond entry in its "
                "favour); otherwise an invalid_trigger_price error explains why. Doing it again changes "
                "nothing more."
            ),
            annotations=SETS_AN_ORDER,
        ),
        Tool.from_function(
            get_positions,
            description=(
                "List the account's open positions (scope: read), optionally for one market: size "
                "(base-asset units, e.g. BTC), entry and current price (USD), unrealized PnL (USD), "
                "take-profit and stop-loss orders (trigger prices in USD, close percent)."
            ),
            annotations=READS,
        ),
        Tool.from_function(
            get_transaction,
            description=(
                "The status of a relayed transaction by id (scope: read): queued, submitted, mined, "
                "confirmed, failed (with the decoded reason), replaced or expired, with every hash it had "
                "and its receipt."
            ),
            annotations=READS,
        ),
        Tool.from_function(
            get_recent_fills,
            description=(
                "The account's fills (scope: read): position.decreased (closed_qty and remaining_qty in "
                "base-asset units, exit_price and realized_pnl_usd in USD, as the trading answers) and "
                "order.executed (a take-profit or "
                "stop-loss the keeper fired), oldest first. Without after: the newest limit fills; with "
                "after: those after it. Returns fills and a cursor: pass it as after next time to get only "
                "what is new. Over HTTP nothing is pushed (stateless): poll this, or use GET /api/stream; "
                "over stdio the resource relayer://fills/recent can be subscribed to."
            ),
            annotations=READS,
        ),
    ]
