"""The MCP tool server for AI agents: each tool adapts its arguments to one `TradingService` call.

Results are the same JSON the REST trading routes answer. Failures come back as MCP tool errors whose text is
the REST error body (`{"error": {"code", "message", "details"}}`), so an agent reads the same stable codes a
REST client does. Prices are decimal strings (or integers): a JSON float cannot carry money exactly.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from relayer.errors import RelayerError
from relayer.trading import DEFAULT_EXIT_PCT, TradeOutcome, TradingService

INSTRUCTIONS = """\
Manage perpetual-futures positions on the vault through the relayer. Every tool needs `api_key` (a
`vrk_...` key): reading tools need the `read` scope, tools that change a position need `trade`. Sizes are
base-asset units (e.g. BTC), prices are USD; pass them as decimal strings such as "96200.5". Trading tools
wait for the block and report the fill the chain recorded; if it takes too long they answer with `status`
"submitted" and a `transactionId` to poll with get_transaction. Errors are JSON with a stable `code`
(e.g. `ambiguous_position`: give `side` or `position_id`; `operator_not_approved`: the account must approve
the relayer first)."""

ApiKey = Annotated[str, Field(description="API key (vrk_...) of the trading account")]
PositionId = Annotated[str, Field(description="position id, 0x + 64 hex digits (see get_positions)")]
Price = Annotated[str | int, Field(description="USD price as a decimal string, e.g. \"96200.5\"")]
IdempotencyKey = Annotated[
    str | None, Field(description="retry-safe id of this request: the same key returns the first answer")
]
"""Bounds are not repeated in the schema: the service checks them, so an agent gets the same JSON errors."""


def _error_text(error: RelayerError) -> str:
    return json.dumps({"error": error.to_dict()}, default=str)


TradingProvider = Callable[[], TradingService]
"""Gives the service when a tool runs (it raises `relay_not_configured` on a server without signers)."""

ToolResult = Annotated[CallToolResult, dict[str, Any]]
"""What every tool returns: a JSON object (also as structured content), or an error result."""


async def _run(
    provider: TradingProvider, call: Callable[[TradingService], Awaitable[TradeOutcome | dict[str, Any]]]
) -> CallToolResult:
    """One tool call: every `RelayerError` becomes a tool error whose text is exactly the REST error body.

    The result is built here rather than by raising `ToolError`: the SDK prefixes a raised error's text with
    "Error executing tool <name>: ", and an agent must be able to parse the text as JSON.
    """
    try:
        result = await call(provider())
    except RelayerError as error:
        return CallToolResult(content=[TextContent(type="text", text=_error_text(error))], is_error=True)
    body = result.body if isinstance(result, TradeOutcome) else result
    text = json.dumps(body, default=str)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=body)


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def build_mcp_server(trading: TradingProvider) -> MCPServer:
    """An MCP server exposing the trading tools over `trading()` (serve it on stdio or mount it over HTTP)."""
    server: MCPServer = MCPServer(name="vault-relayer", instructions=INSTRUCTIONS)

    @server.tool(
        description=(
            "Close a percentage of the account's position in a market at the oracle price (scope: trade). "
            "exit_pct 1-100 (default 50; 100 closes all). If the account has both a long and a short in the "
            "market, give side or position_id. The price is bounded: allowed_price (worst USD exit price), "
            "or "
            "max_slippage_bps from the current price, or the server's default guard. dry_run simulates and "
            "sends nothing. Returns closed_qty, remaining_qty, exit_price, realized_pnl_usd, "
            "remaining_unrealized_pnl_usd as exact decimal strings."
        )
    )
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
        body = _drop_none(
            symbol=symbol, exit_pct=exit_pct, side=side, positionId=position_id, allowedPrice=allowed_price,
            maxSlippageBps=max_slippage_bps, dry_run=dry_run,
        )
        return await _run(
            trading, lambda t: t.partial_close(api_key, body, idempotency_key=idempotency_key)
        )

    @server.tool(
        description=(
            "Close a position fully, or by size_delta base-asset units (scope: trade). allowed_price is the "
            "worst USD exit price (long: minimum, short: maximum); without it the server's slippage guard "
            "applies. Returns the fill the chain recorded."
        )
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
        body = _drop_none(
            positionId=position_id, sizeDelta=size_delta, allowedPrice=allowed_price,
            maxSlippageBps=max_slippage_bps, dry_run=dry_run,
        )
        return await _run(
            trading, lambda t: t.close_position(api_key, body, idempotency_key=idempotency_key)
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
            body = _drop_none(positionId=position_id, price=price, close_pct=close_pct, dry_run=dry_run)
            return await _run(
                trading,
                lambda t: t.set_trigger(
                    api_key, body, is_take_profit=is_take_profit, idempotency_key=idempotency_key
                ),
            )

        return set_trigger

    for name, order, side_long, side_short in (
        ("set_take_profit", "take-profit", "above", "below"),
        ("set_stop_loss", "stop-loss", "below", "above"),
    ):
        server.add_tool(
            trigger_tool(name == "set_take_profit"),
            name=name,
            description=(
                f"Set or replace the position's {order} (scope: trade): when the oracle price reaches price, "
                f"the keeper closes close_pct percent of the position. Must be {side_long} the current price "
                f'for a long, {side_short} for a short. price "0" cancels it.'
            ),
        )

    @server.tool(
        description=(
            "Move the stop-loss to the entry price for the full size (scope: trade), locking in a no-loss "
            "exit. "
            "Only possible while the trade is in profit (price beyond entry in its favour); otherwise an "
            "invalid_trigger_price error explains why."
        )
    )
    async def move_to_breakeven(
        position_id: PositionId,
        api_key: ApiKey,
        dry_run: bool = False,
        idempotency_key: IdempotencyKey = None,
    ) -> ToolResult:
        body = {"positionId": position_id, "dry_run": dry_run}
        return await _run(
            trading, lambda t: t.move_to_breakeven(api_key, body, idempotency_key=idempotency_key)
        )

    @server.tool(
        description=(
            "List the account's open positions (scope: read), optionally for one market: size, entry and "
            "current price, unrealized PnL in USD, take-profit and stop-loss orders."
        )
    )
    async def get_positions(api_key: ApiKey, symbol: str | None = None) -> ToolResult:
        return await _run(trading, lambda t: t.get_positions(api_key, symbol))

    @server.tool(
        description=(
            "The status of a relayed transaction by id (scope: read): queued, submitted, mined, confirmed, "
            "failed (with the decoded reason), replaced or expired, with every hash it had and its receipt."
        )
    )
    async def get_transaction(transaction_id: str, api_key: ApiKey) -> ToolResult:
        return await _run(trading, lambda t: t.get_transaction(api_key, transaction_id))

    return server
