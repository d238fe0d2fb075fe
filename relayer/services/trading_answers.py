"""What the trading actions answer: fills, order changes, unfinished sends and failed records.

Pure formatting over values the service already has (a mined relay record, the builder's preview, a
position): the fill read from the vault's `PositionDecreased` event, never a guess; a pending outcome for a
record still pending; a failed record's decoded error. `TradingService` in `relayer.services.trading`
(authentication, reads and the actions) calls these; the faces turn a `TradeOutcome` into HTTP or an MCP
result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relayer.constants import FIRST_STOP_ID
from relayer.domain import calldata
from relayer.domain.exits import closed_pct_text
from relayer.domain.notices import fill_payload
from relayer.domain.positions import Position, realized_pnl_e8, side_name
from relayer.domain.records import RelayRecord
from relayer.domain.units import size_text, usd_text
from relayer.errors import RelayerError, restore_error
from relayer.services.builder_answers import ClosePreview

TAKE_PROFIT_ID = 0
"""The primary take-profit's order id (the seed's `takeProfit`); the primary stop is `FIRST_STOP_ID` (4)."""


@dataclass(frozen=True)
class TradeOutcome:
    """An answer: the fill (or the orders), or, `pending`, the record that was sent and is not mined yet
    (REST answers it 202, a settled one 200)."""

    body: dict[str, Any]
    pending: bool = False


def plan_view(plan: Mapping[str, Any]) -> dict[str, Any]:
    """A position's exit plan as `get_orders` and every order change answer it, from a
    `PlanPreview.to_dict()`: every order in the vault's execution order with its share of the plan, trail and
    sizes (`closesNowQty`, `expectedQty`), `planRemainingBps`, and its primary take-profit (id 0) and stop
    (id 4) as `takeProfit` / `stopLoss` (`{price, closeBps}`, the seed's fields, as before exit plans)."""
    orders = list(plan["orders"])
    return {
        "positionId": plan["positionId"],
        "symbol": plan["market"],
        "side": plan["side"],
        "size": plan["size"],
        "currentPrice": plan["currentPrice"],
        "planRemainingBps": plan["planRemainingBps"],
        "orders": orders,
        "takeProfit": _primary(orders, TAKE_PROFIT_ID),
        "stopLoss": _primary(orders, FIRST_STOP_ID),
    }


def orders_answer(plan: Mapping[str, Any], record: RelayRecord | None = None) -> dict[str, Any]:
    """What an order change answers: `success`, the plan after it (`plan_view`), and the mined `record` that
    changed it (None: a dry run, nothing sent)."""
    answer = {"success": True, **plan_view(plan)}
    if record is None:
        return {**answer, "dry_run": True}
    assert record.mined is not None
    return {**answer, "transactionId": record.id, "transactionHash": record.mined.tx_hash}


def _primary(orders: list[Mapping[str, Any]], order_id: int) -> dict[str, Any] | None:
    """The order `order_id` as the seed's fields show one (`{price, closeBps}`), or None."""
    found = next((o for o in orders if o["orderId"] == order_id), None)
    return None if found is None else {"price": found["price"], "closeBps": found["shareBps"]}


def exit_answer(
    account: str, preview: Mapping[str, Any], record: RelayRecord | None = None
) -> dict[str, Any]:
    """What an emergency exit of `account` answers: every position it closes, as the vault's
    `PositionDecreased` events recorded them once mined (`fills_from_record`), or the builder's preview
    (`ExitPreview.to_dict()`: `market`, `positions`) for a dry run."""
    answer = {"success": True, "account": account, "symbol": preview["market"]}
    if record is None:
        return {**answer, "dry_run": True, "fills": list(preview["positions"])}
    assert record.mined is not None
    sides = {str(p["positionId"]).lower(): (p["symbol"], p["side"]) for p in preview["positions"]}
    return {
        **answer,
        "fills": fills_from_record(record, sides),
        "transactionId": record.id,
        "transactionHash": record.mined.tx_hash,
    }


def fills_from_record(record: RelayRecord, markets: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """Every fill the mined `record` made, one per `PositionDecreased` event in log order, in the words of
    the `position.decreased` notice (`relayer.domain.notices.fill_payload`) with the position's `symbol` and
    `side` from `markets` (by 0x-hex id, lower case)."""
    assert record.mined is not None
    fills = []
    for event in record.mined.events:
        if event["event"] == "PositionDecreased":
            fill = fill_payload(event["args"], record.id, record.mined)
            symbol, side = markets.get(fill["positionId"].lower(), (None, None))
            fills.append({"symbol": symbol, "side": side, **fill})
    return fills


def unfinished(record: RelayRecord) -> TradeOutcome:
    """A pending outcome while the record is pending; a failed record raises its decoded error."""
    if record.status.is_pending:
        return TradeOutcome(
            {
                "success": False,
                "status": record.status.value,
                "transactionId": record.id,
                "transactionHash": record.attempts[-1].tx_hash if record.attempts else None,
                "message": "sent; not mined yet: poll get_transaction with this id",
            },
            pending=True,
        )
    raise record_error(record)


def fill_from_preview(preview: ClosePreview) -> dict[str, Any]:
    """A close's dry run: the fill the builder's preview expects (nothing sent)."""
    position = preview.position
    return {
        "success": True,
        "dry_run": True,
        "symbol": position.market,
        "side": side_name(position.is_long),
        "closed_pct": closed_pct_text(preview.size_delta, position.size),
        "closed_qty": size_text(preview.size_delta),
        "remaining_qty": size_text(preview.size_after),
        "exit_price": usd_text(preview.current_price_e8),
        "realized_pnl_usd": usd_text(preview.realized_pnl_e8),
        "remaining_unrealized_pnl_usd": usd_text(preview.remaining_unrealized_pnl_e8),
        "positionId": "0x" + position.position_id.hex(),
        "transactionHash": None,
    }


def fill_from_record(record: RelayRecord, position: Position) -> dict[str, Any]:
    """The fill exactly as the vault's `PositionDecreased` event recorded it."""
    assert record.mined is not None
    pid = "0x" + position.position_id.hex()
    events = [
        e["args"]
        for e in record.mined.events
        if e["event"] == "PositionDecreased" and str(e["args"]["positionId"]).lower() == pid
    ]
    if not events:
        raise RelayerError("mined, but the vault recorded no PositionDecreased event", id=record.id)
    fill = events[-1]
    remaining, exit_price = int(fill["remainingSize"]), int(fill["exitPrice"])
    closed = int(fill["sizeDelta"])
    return {
        "success": True,
        "symbol": position.market,
        "side": side_name(position.is_long),
        "closed_pct": closed_pct_text(closed, closed + remaining),
        "closed_qty": size_text(closed),
        "remaining_qty": size_text(remaining),
        "exit_price": usd_text(exit_price),
        "realized_pnl_usd": usd_text(int(fill["realizedPnl"])),
        "remaining_unrealized_pnl_usd": usd_text(
            realized_pnl_e8(position.is_long, position.entry_price_e8, exit_price, remaining)
        ),
        "positionId": pid,
        "transactionId": record.id,
        "transactionHash": record.mined.tx_hash,
    }


def positions_of_call(data: bytes) -> set[bytes]:
    """Every position a vault call touches, looking inside a `multicall` (whose calls carry the ids)."""
    try:
        function, args = calldata.decode_call(data)
    except ValueError:
        return set()
    if function == "multicall":
        inner = args.get("data")
        calls = inner if isinstance(inner, list | tuple) else []
        return {pid for call in calls for pid in positions_of_call(bytes(call))}
    value = args.get("positionId")
    return {bytes(value)} if isinstance(value, bytes | bytearray) else set()


def owner_of_call(data: bytes) -> str | None:
    """The account an `emergencyExit` call acts for (it names no position), else None."""
    try:
        function, args = calldata.decode_call(data)
    except ValueError:
        return None
    owner = args.get("owner") if function == "emergencyExit" else None
    return owner if isinstance(owner, str) else None


def record_error(record: RelayRecord) -> RelayerError:
    """The error a failed record carries (recorded as `RelayerError.to_dict()`, revert already decoded)."""
    if record.error:
        return restore_error(record.error)
    return RelayerError(f"the transaction ended {record.status.value}", transactionId=record.id)
