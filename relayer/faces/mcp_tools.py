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
from functools import partial
from typing import Annotated, Any, Required

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, CallToolResult, TextContent, ToolAnnotations
from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic reads `typing.TypedDict` only from Python 3.12

from relayer.constants import MAX_SLIPPAGE_BPS
from relayer.errors import InvalidFieldError, RelayerError
from relayer.services.trading import (
    DEFAULT_FILLS_PAGE,
    MAX_FILLS_PAGE,
    PROGRESS_STEPS,
    Progress,
    TradeAction,
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
get_transaction. Exit plans: a position holds up to 4 take-profits (order ids 0-3) and 2 stops (4-5), each
closing a percent OF THE PLAN (`*_pct` are percents, `*_bps` basis points, 100 bps = 1%): set_exit_plan sets
tiers and a (trailing) stop at once, set_take_profit with exit_pct adds a tier, get_orders lists them,
cancel_order removes one. The relayer only reduces risk: it never loosens or cancels a stop
(`operator_right_missing`: the account must sign that itself). emergency_exit closes everything. Errors are
JSON with a stable `code` (e.g. `ambiguous_position`: give `side` or `position_id`; `operator_not_approved`:
the account must approve the relayer first, with exactly the rights in `details.calldata`;
`nothing_to_change`: the plan already is what was asked, nothing was sent)."""

ApiKey = Annotated[str, Field(description="API key (vrk_...) of the trading account")]
PositionId = Annotated[str, Field(description="position id, 0x + 64 hex digits (see get_positions)")]
Price = Annotated[str | int, Field(description='USD price as a decimal string, e.g. "96200.5"')]
MaxSlippageBps = Annotated[int | None, Field(description=f"0-{MAX_SLIPPAGE_BPS} basis points")]
IdempotencyKey = Annotated[
    str | None, Field(description="retry-safe id of this request: the same key returns the first answer")
]
Side = Annotated[str | None, Field(description="long or short")]
PlanPct = Annotated[
    int, Field(description="percent OF THE PLAN, 1-100: 25 means a quarter of the size the plan was set on")
]
StopPct = Annotated[
    int, Field(description="percent of the plan, 1-100; default 100 = whatever remains when it fires")
]
TrailBps = Annotated[int, Field(description="trail distance in basis points, 1-9999 (200 = 2%)")]


@with_config(ConfigDict(extra="forbid", strict=True))
class TakeProfitTier(TypedDict):
    """One take-profit tier of `set_exit_plan`."""

    price: Annotated[str | int, Field(description='trigger price in USD, e.g. "97000"')]
    exit_pct: PlanPct


@with_config(ConfigDict(extra="forbid", strict=True))
class StopLoss(TypedDict, total=False):
    """The fixed stop of `set_exit_plan`."""

    price: Required[Annotated[str | int, Field(description='trigger price in USD, e.g. "94000"')]]
    exit_pct: StopPct


@with_config(ConfigDict(extra="forbid", strict=True))
class TrailingStop(TypedDict, total=False):
    """The trailing stop of `set_exit_plan`."""

    trail_bps: Required[TrailBps]
    price: Annotated[
        str | int, Field(description="starting trigger in USD; default: trail_bps from the current price")
    ]
    exit_pct: StopPct


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
TAKE_PROFIT_FIELDS: FieldNames = {
    "position_id": "positionId",
    "price": "price",
    "close_pct": "close_pct",
    "exit_pct": "exit_pct",
    "dry_run": "dry_run",
}
STOP_LOSS_FIELDS: FieldNames = {
    "position_id": "positionId",
    "price": "price",
    "close_pct": "close_pct",
    "trail_bps": "trail_bps",
    "dry_run": "dry_run",
}
BREAKEVEN_FIELDS: FieldNames = {"position_id": "positionId", "dry_run": "dry_run"}
EXIT_PLAN_FIELDS: FieldNames = {
    "position_id": "positionId",
    "symbol": "symbol",
    "side": "side",
    "take_profits": "take_profits",
    "stop_loss": "stop_loss",
    "trailing_stop": "trailing_stop",
    "dry_run": "dry_run",
}
CANCEL_ORDER_FIELDS: FieldNames = {"position_id": "positionId", "order_id": "orderId", "dry_run": "dry_run"}
EMERGENCY_EXIT_FIELDS: FieldNames = {"symbol": "symbol", "dry_run": "dry_run"}
GET_ORDERS_FIELDS: FieldNames = {"position_id": "positionId", "symbol": "symbol", "side": "side"}
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


async def _act(
    provider: TradingProvider,
    fields: FieldNames,
    arguments: Mapping[str, Any],
    action: Callable[[TradingService], TradeAction],
) -> CallToolResult:
    """A trading action's tool call: the REST body from the tool's `arguments` (`_body`), its `api_key` and
    `idempotency_key` passed on, the result or error as `_run` makes it."""
    body = _body(fields, arguments)
    key, idempotency_key = arguments[API_KEY], arguments["idempotency_key"]
    return await _run(provider, lambda t: action(t)(key, body, idempotency_key=idempotency_key), fields)


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
"""set_take_profit, move_to_breakeven, cancel_order: replace or remove an order (the old one is gone); the
same arguments again change nothing more: a repeat that would leave the plan as it is is refused with 409
`nothing_to_change` and nothing is sent (a cancel, or price 0, of an order no longer pending: 404
`order_not_found`; a tier already at that price: `order_out_of_sequence`)."""
SETS_A_PLAN = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
)
"""set_stop_loss, set_exit_plan: replace the stop or the whole plan (destructive); not idempotent, since a
trailing stop without a price starts from the price at the call and a whole plan's percents apply to the
size at the call, so the same arguments later set a different plan. A call that would leave the plan exactly
as it is is refused with 409 `nothing_to_change`, and nothing is sent."""
EXITS = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
)
"""emergency_exit: closes every open position for good; called again it closes whatever was opened since (an
`idempotency_key` makes a retry return the first answer)."""
READS = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)
"""get_positions, get_orders, get_transaction, get_recent_fills: read the chain and the journal, change
nothing."""


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
        return await _act(
            trading,
            PARTIAL_CLOSE_FIELDS,
            locals(),
            lambda t: partial(t.partial_close, progress=_progress(ctx)),
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
        return await _act(
            trading,
            CLOSE_POSITION_FIELDS,
            locals(),
            lambda t: partial(t.close_position, progress=_progress(ctx)),
        )

    async def set_take_profit(
        position_id: PositionId,
        price: Price,
        api_key: ApiKey,
        exit_pct: Annotated[
            int | None,
            Field(
                description="ADD a tier closing this percent OF THE PLAN, 1-100 (25 = a quarter of the size "
                "the plan was set on); other take-profits stay"
            ),
        ] = None,
        close_pct: Annotated[
            int | None,
            Field(description="instead: set the PRIMARY take-profit (order 0) with this percent, 1-100"),
        ] = None,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        return await _act(
            trading, TAKE_PROFIT_FIELDS, locals(), lambda t: partial(t.set_trigger, is_take_profit=True)
        )

    async def set_stop_loss(
        position_id: PositionId,
        api_key: ApiKey,
        price: Annotated[
            str | int | None,
            Field(description='trigger in USD, e.g. "94000" (required without trail_bps; "0" cancels)'),
        ] = None,
        trail_bps: Annotated[
            int | None,
            Field(description="makes it a trailing stop: basis points, 1-9999 (200 = 2%)"),
        ] = None,
        close_pct: Annotated[
            int | None, Field(description="percent of the plan, 1-100 (default 100: whatever remains)")
        ] = None,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        return await _act(
            trading, STOP_LOSS_FIELDS, locals(), lambda t: partial(t.set_trigger, is_take_profit=False)
        )

    async def move_to_breakeven(
        position_id: PositionId,
        api_key: ApiKey,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        return await _act(trading, BREAKEVEN_FIELDS, locals(), lambda t: t.move_to_breakeven)

    async def set_exit_plan(
        api_key: ApiKey,
        position_id: PositionId | None = None,
        symbol: Annotated[
            str | None, Field(description="or the position in this market, e.g. BTCUSDT")
        ] = None,
        side: Side = None,
        take_profits: Annotated[
            list[TakeProfitTier] | None,
            Field(description="up to 4 tiers {price (USD), exit_pct (percent of the plan)}, any order"),
        ] = None,
        stop_loss: Annotated[
            StopLoss | None, Field(description="a fixed stop {price (USD), exit_pct (default 100)}")
        ] = None,
        trailing_stop: Annotated[
            TrailingStop | None,
            Field(description="a trailing stop {trail_bps, price (USD, optional), exit_pct (default 100)}"),
        ] = None,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        return await _act(trading, EXIT_PLAN_FIELDS, locals(), lambda t: t.set_exit_plan)

    async def cancel_order(
        position_id: PositionId,
        order_id: Annotated[
            int, Field(description="the order's id from get_orders: 0-3 take-profits, 4-5 stops")
        ],
        api_key: ApiKey,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        return await _act(trading, CANCEL_ORDER_FIELDS, locals(), lambda t: t.cancel_order)

    async def emergency_exit(
        api_key: ApiKey,
        symbol: Annotated[
            str | None, Field(description="only this market's positions, e.g. BTCUSDT; omit: every market")
        ] = None,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        return await _act(trading, EMERGENCY_EXIT_FIELDS, locals(), lambda t: t.emergency_exit)

    async def get_orders(
        api_key: ApiKey,
        position_id: PositionId | None = None,
        symbol: Annotated[
            str | None, Field(description="or the position in this market, e.g. BTCUSDT")
        ] = None,
        side: Side = None,
    ) -> ToolResult:
        query = _body(GET_ORDERS_FIELDS, locals())
        return await _run(trading, lambda t: t.get_orders(api_key, query), GET_ORDERS_FIELDS)

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
            set_take_profit,
            description=(
                "Add a take-profit tier, or set the primary take-profit (scope: trade). With exit_pct: ADDS "
                "a tier at price (USD) closing exit_pct percent OF THE PLAN (25 = a quarter of the size the "
                "plan was set on; three calls of 25 at three prices make a 25/25/25 ladder); other "
                "take-profits stay. With close_pct (or neither): sets or replaces the primary take-profit "
                '(order 0), closing close_pct percent of the plan (default 100); price "0" cancels it '
                "(order_not_found when none is pending). While other tiers are pending give one of the two "
                "(neither is refused, invalid_field naming close_pct: the default 100 would make order 0 "
                "close everything). The price must be above the current price for a long, below for a "
                "short. Returns the plan after the change (every order with its share, trail and expected "
                "closed size in base-asset units). Up to 4 take-profits; a tier at a price already used is "
                "refused. The same order again is refused with nothing_to_change (409): nothing is sent."
            ),
            annotations=SETS_AN_ORDER,
        ),
        Tool.from_function(
            set_stop_loss,
            description=(
                "Set or tighten the position's primary stop (order 4) (scope: trade): at price (USD; below "
                "the current price for a long, above for a short), closing close_pct percent of the plan "
                "(default 100: whatever remains; this tool takes close_pct, set_exit_plan's stops take "
                "exit_pct). With trail_bps (basis points, 1-9999) it is a trailing "
                "stop: its trigger starts trail_bps from the current price (or at price) and the keeper "
                "ratchets it after the price, never back. The relayer only tightens stops: loosening or "
                'cancelling one (price "0") is refused with operator_right_missing (the account signs '
                "that itself). The same stop again is refused with nothing_to_change (409): nothing is sent. "
                "Returns the plan after the change (prices in USD)."
            ),
            annotations=SETS_A_PLAN,
        ),
        Tool.from_function(
            move_to_breakeven,
            description=(
                "Move the primary stop (order 4) to the entry price (USD) for whatever remains (scope: "
                "trade), locking in a no-loss exit; a trailing stop keeps trailing. Only possible while the "
                "trade is in profit (price beyond entry in its favour; otherwise invalid_trigger_price), "
                "and only if it tightens the stop (a stop already beyond entry: operator_right_missing). "
                "Doing it again is refused with nothing_to_change (409): nothing is sent."
            ),
            annotations=SETS_AN_ORDER,
        ),
        Tool.from_function(
            set_exit_plan,
            description=(
                "Replace the position's whole exit plan in one transaction (scope: trade): take_profits "
                "(up to 4 tiers, each {price in USD, exit_pct percent OF THE PLAN}; ids are given in the "
                "order the price reaches them), a stop_loss {price, exit_pct} and/or a trailing_stop "
                "{trail_bps basis points, price optional, exit_pct}; a stop's exit_pct defaults to 100 = "
                "whatever remains (here every percent is named exit_pct; set_stop_loss and set_take_profit's "
                "primary order take close_pct). Percents are of the size the plan is set on: tiers of "
                "25/25/25 and a "
                "trailing stop close exactly a quarter each. Position by position_id, or symbol (and side "
                "if both a long and a short are open). Orders not listed are cancelled; a plan that drops "
                "or loosens a stop is refused (operator_right_missing); a plan identical to the current one "
                "is refused with nothing_to_change (409), nothing sent. Returns the plan (expected closed "
                "size of each order in base-asset units)."
            ),
            annotations=SETS_A_PLAN,
        ),
        Tool.from_function(
            cancel_order,
            description=(
                "Cancel one pending order by order_id (scope: trade): 0-3 take-profits, 4-5 stops (see "
                "get_orders). Cancelling a stop is refused with operator_right_missing: the relayer may "
                "never remove a stop; the account signs that itself (POST /api/relay/signed). An id with "
                "no pending order is refused with order_not_found (404), nothing sent. Returns the plan "
                "after it (prices in USD)."
            ),
            annotations=SETS_AN_ORDER,
        ),
        Tool.from_function(
            emergency_exit,
            description=(
                "Close EVERY open position of the account (or only symbol's) in one transaction at the "
                "oracle prices, with no slippage bound (scope: trade). Returns one fill per position: "
                "closed_qty (base-asset units), exit_price and realized_pnl_usd (USD). dry_run lists what "
                "it would close. Each call closes whatever is open then: pass idempotency_key to make a "
                "retry return the first answer."
            ),
            annotations=EXITS,
        ),
        Tool.from_function(
            get_orders,
            description=(
                "A position's exit plan (scope: read), by position_id or symbol (+ side): every pending "
                "order with orderId (0-3 take-profits, 4-5 stops), type (take_profit, stop_loss, "
                "trailing_stop), price (USD), shareBps and trailBps (basis points), closesNowQty and "
                "expectedQty (base-asset units: what it closes now, and along the plan), and "
                "planRemainingBps (the share of the plan not yet executed)."
            ),
            annotations=READS,
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
