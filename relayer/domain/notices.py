"""What the relayer tells the outside world as it happens: notices, pure values (no SQL, no HTTP).

A notice is written in the same database transaction as the change it describes (`relayer.stores.journal`),
so nothing is told that did not happen and nothing that happened goes untold. Webhooks
(`relayer.services.webhooks`), the `GET /api/stream` Server-Sent Events and MCP's recent fills all read the
same table, in the same order, from a `Cursor`.

The types:
- `transaction.status`: a relay record was journaled or changed status (`queued`, `submitted`, `mined`,
  `confirmed`, `failed`, `replaced`, `expired`; back to `submitted` after a reorg).
- `position.decreased`: a mined transaction decreased a position (the vault's `PositionDecreased`, with the
  same fields as the trading answers: `closed_qty`, `remaining_qty`, `exit_price`, `realized_pnl_usd`).
  Told when the record is mined; a reorg that drops the block is told as `transaction.status` back to
  `submitted`, and the fill is told again when it mines anew (dedupe on `transactionId` + `positionId`).
- `order.executed`: a keeper execution crossed an order (`TriggerExecuted`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relayer.domain.exits import closed_pct_text
from relayer.domain.records import Mined
from relayer.domain.status import RecordKind, TxStatus
from relayer.domain.units import size_text, usd_text


class NoticeType(StrEnum):
    """The kinds of notice, as webhooks (`type`) and streams (`event:`) name them."""

    TRANSACTION_STATUS = "transaction.status"
    POSITION_DECREASED = "position.decreased"
    ORDER_EXECUTED = "order.executed"


@dataclass(frozen=True)
class Notice:
    """One notice to journal: who it is for (`account`, lower-case; None: operators only) and what it says."""

    type: NoticeType
    account: str | None
    record_id: str | None
    payload: dict[str, Any]


_CURSOR = re.compile(r"^(0|[1-9][0-9]{0,18})-(0|[1-9][0-9]{0,18})$")
MAX_CURSOR_PART = 2**63 - 1
"""The largest `txn` or id a cursor can hold: the databases' signed 64-bit integers."""


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in the notices, ordered as readers see them: (writing transaction, id).

    On PostgreSQL ids are handed out before commit, so a notice with a lower id can become visible after one
    with a higher id; readers therefore only read notices whose writing transaction is older than every
    transaction still running, ordered by that transaction and then by id, and nothing can appear behind a
    cursor once read. On SQLite (one writer at a time) the transaction is 0 and ids are in commit order.

    >>> Cursor.parse("0-42"), Cursor.parse("0-42").text
    (Cursor(txn=0, id=42), '0-42')
    >>> Cursor.parse("42") is None, Cursor.parse("-1-2") is None, Cursor.parse(f"{2**63}-0") is None
    (True, True, True)
    """

    txn: int
    id: int

    @property
    def text(self) -> str:
        """The opaque form clients hold (`Last-Event-ID`, `?after=`)."""
        return f"{self.txn}-{self.id}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """A cursor from its text; None when it is not one (the caller answers a 4xx)."""
        match = _CURSOR.match(text.strip())
        if match is None:
            return None
        txn, notice_id = int(match.group(1)), int(match.group(2))
        if txn > MAX_CURSOR_PART or notice_id > MAX_CURSOR_PART:
            return None  # no database column holds it (19 digits reach past a signed 64-bit integer)
        return cls(txn, notice_id)


START = Cursor(0, 0)
"""Before every notice."""


def notice_id(database_id: str | None, number: int) -> str:
    """A notice's id (its webhooks' `webhook-id`, its streams' `id`): `evt_<database id>_<n>`, unique across
    databases, so a receiver deduping on it never drops a new notice after a redeploy on a fresh database
    (whose notices count from 1 again); `evt_<n>` on a database without an id.

    >>> notice_id("3f2a9c1b7d6e5a40", 12), notice_id(None, 12)
    ('evt_3f2a9c1b7d6e5a40_12', 'evt_12')
    """
    return f"evt_{number}" if database_id is None else f"evt_{database_id}_{number}"


@dataclass(frozen=True)
class StoredNotice:
    """A journaled notice, as readers get it."""

    cursor: Cursor
    chain_id: int
    type: NoticeType
    account: str | None
    record_id: str | None
    payload: dict[str, Any]
    created_at: float
    database_id: str | None = None
    """The random id of the database that journaled it (made once by schema 8)."""

    @property
    def id(self) -> str:
        """The notice's id, the same for every delivery of it (Standard Webhooks' `webhook-id`)."""
        return notice_id(self.database_id, self.cursor.id)

    def envelope(self) -> dict[str, Any]:
        """The JSON every face sends: `{id, type, timestamp, chainId, data}`."""
        return {
            "id": self.id,
            "type": self.type.value,
            "timestamp": round_timestamp(self.created_at),
            "chainId": self.chain_id,
            "data": self.payload,
        }


def round_timestamp(unix_s: float) -> int:
    """Whole unix seconds (notices carry no sub-second time: the cursor orders them)."""
    return int(unix_s)


def fill_payload(args: dict[str, Any], record_id: str | None, mined: Mined) -> dict[str, Any]:
    """A `PositionDecreased` (record-kept JSON args) in the trading answers' words.

    >>> fill_payload({"positionId": "0x01", "owner": "0xAb", "sizeDelta": "25000000", "remainingSize":
    ...   "75000000", "exitPrice": "6500000000000", "realizedPnl": "-1250000000"}, "r1",
    ...   Mined("0xh", 7, "0xb", 1, 1, True))["closed_pct"]
    '25'
    """
    closed, remaining = int(args["sizeDelta"]), int(args["remainingSize"])
    return {
        "positionId": str(args["positionId"]),
        "owner": str(args["owner"]),
        "closed_qty": size_text(closed),
        "remaining_qty": size_text(remaining),
        "closed_pct": closed_pct_text(closed, closed + remaining),
        "exit_price": usd_text(int(args["exitPrice"])),
        "realized_pnl_usd": usd_text(int(args["realizedPnl"])),
        "transactionId": record_id,
        "transactionHash": mined.tx_hash,
        "blockNumber": mined.block_number,
    }


def execution_payload(args: dict[str, Any], record_id: str | None, mined: Mined) -> dict[str, Any]:
    """A `TriggerExecuted` (record-kept JSON args): which order fired, at what price, for what size."""
    return {
        "positionId": str(args["positionId"]),
        "order": "take_profit" if args["isTakeProfit"] else "stop_loss",
        "trigger_price": usd_text(int(args["triggerPrice"])),
        "execution_price": usd_text(int(args["executionPrice"])),
        "closed_qty": size_text(int(args["sizeDelta"])),
        "transactionId": record_id,
        "transactionHash": mined.tx_hash,
        "blockNumber": mined.block_number,
    }


def status_notices(
    record_id: str,
    kind: RecordKind,
    account: str | None,
    previous: TxStatus | None,
    new: TxStatus,
    *,
    error: dict[str, Any] | None = None,
    mined: Mined | None = None,
    tx_hash: str | None = None,
) -> list[Notice]:
    """The notices a record's status change makes: always `transaction.status`; on a move to `mined`, one
    `position.decreased` per fill and one `order.executed` per keeper execution the receipt carries.

    `previous` None: the record was just journaled.
    """
    who = None if account is None else account.lower()
    status: dict[str, Any] = {
        "transactionId": record_id,
        "kind": kind.value,
        "status": new.value,
        "previousStatus": None if previous is None else previous.value,
    }
    if mined is not None:
        status["transactionHash"] = mined.tx_hash
        status["blockNumber"] = mined.block_number
    elif tx_hash is not None:
        status["transactionHash"] = tx_hash
    if error is not None:
        status["error"] = {"code": error.get("code"), "message": error.get("message")}
    notices = [Notice(NoticeType.TRANSACTION_STATUS, who, record_id, status)]
    if mined is not None and new is TxStatus.MINED:
        for event in mined.events:
            name, args = event.get("event"), event.get("args") or {}
            if name == "PositionDecreased":
                owner = str(args.get("owner", "")).lower() or who
                fill = fill_payload(args, record_id, mined)
                notices.append(Notice(NoticeType.POSITION_DECREASED, owner, record_id, fill))
            elif name == "TriggerExecuted":
                execution = execution_payload(args, record_id, mined)
                notices.append(Notice(NoticeType.ORDER_EXECUTED, who, record_id, execution))
    return notices
