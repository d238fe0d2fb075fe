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

from relayer.domain import calldata
from relayer.domain.exits import closed_pct_text
from relayer.domain.positions import Position, realized_pnl_e8, side_name
from relayer.domain.records import RelayRecord
from relayer.domain.units import size_text, usd_text
from relayer.errors import RelayerError, restore_error
from relayer.services.builder_answers import BuiltTransaction


@dataclass(frozen=True)
class TradeOutcome:
    """An answer: the fill (or the orders), or, `pending`, the record that was sent and is not mined yet
    (REST answers it 202, a settled one 200)."""

    body: dict[str, Any]
    pending: bool = False


def orders_answer(position: Mapping[str, Any], record: RelayRecord | None = None) -> dict[str, Any]:
    """What a take-profit / stop-loss change answers: the position's orders after it, and the mined `record`
    that changed them (None: a dry run, nothing sent)."""
    answer = {
        "success": True,
        "positionId": position["positionId"],
        "symbol": position["market"],
        "takeProfit": position["takeProfit"],
        "stopLoss": position["stopLoss"],
    }
    if record is None:
        return {**answer, "dry_run": True}
    assert record.mined is not None
    return {**answer, "transactionId": record.id, "transactionHash": record.mined.tx_hash}


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


def fill_from_preview(built: BuiltTransaction) -> dict[str, Any]:
    preview = built.preview
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


def record_error(record: RelayRecord) -> RelayerError:
    """The error a failed record carries (recorded as `RelayerError.to_dict()`, revert already decoded)."""
    if record.error:
        return restore_error(record.error)
    return RelayerError(f"the transaction ended {record.status.value}", transactionId=record.id)
