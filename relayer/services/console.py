"""The operator console's snapshot: everything `GET /api/console` shows an operator, read in one call.

Signers (balance, low-balance flag, nonces as the chain and the journal see them, records in flight, who
holds their lease), the queue by status, the newest relay records with their decoded fills or errors, the
orders the keeper tracks, and today's spend against the sponsorship budget. Read-only: nothing here writes,
signs or sends. The values are the ones `/health`, `relayer relay list` and the notices already use
(`RelayService.signers_status`, `Leases.describe`, `notices.fill_payload`, `RelayService.spend`), so the
console and those never disagree about what a field means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from relayer.constants import ETH_DECIMALS, FIRST_STOP_ID
from relayer.domain.notices import Cursor, execution_payload, fill_payload
from relayer.domain.records import RelayRecord
from relayer.domain.status import TxStatus
from relayer.domain.units import format_fixed, usd_text
from relayer.services.keeper import Keeper
from relayer.services.relay.leases import KEEPER_LEASE, SIGNER_PREFIX
from relayer.services.relay.service import RelayService

RECENT_TRANSACTIONS = 50
"""Relay records the console lists, newest first."""
MAX_KEEPER_ORDERS = 200
"""Keeper orders the console lists (the count says how many there are in all)."""


def ether_text(amount_wei: int) -> str:
    """Wei as exact ether text (`'1.5'`, `'0'`).

    >>> ether_text(1_500_000_000_000_000_000), ether_text(0)
    ('1.5', '0')
    """
    return format_fixed(amount_wei, ETH_DECIMALS)


def transaction_row(record: RelayRecord) -> dict[str, Any]:
    """One relay record as the console lists it: where it stands, and its fills (the trading answers' words)
    or the error it ended with. Never its calldata or idempotency key."""
    mined = record.mined
    fills: list[dict[str, Any]] = []
    executions: list[dict[str, Any]] = []
    if mined is not None and mined.success:
        for event in mined.events:
            name, args = event.get("event"), event.get("args") or {}
            if name == "PositionDecreased":
                fills.append(fill_payload(args, record.id, mined))
            elif name == "TriggerExecuted":
                executions.append(execution_payload(args, record.id, mined))
    error = record.error
    return {
        "id": record.id,
        "kind": record.kind.value,
        "status": record.status.value,
        "account": record.account,
        "signer": record.sender,
        "nonce": record.nonce,
        "transactionHash": record.to_dict()["transactionHash"],
        "blockNumber": None if mined is None else mined.block_number,
        "createdAt": int(record.created_at),
        "updatedAt": int(record.updated_at),
        "fills": fills,
        "executions": executions,
        "error": None if error is None else {"code": error.get("code"), "message": error.get("message")},
    }


@dataclass(frozen=True)
class JournalView:
    """What the console reads from the journal, in one worker-thread call (`journal_view`)."""

    leases: list[dict[str, object]]
    counts: dict[TxStatus, int]
    records: list[RelayRecord]
    spend: dict[str, Any]
    cursor: Cursor


def journal_view(relay: RelayService) -> JournalView:
    """The console's journal reads. Blocking (database round trips, a count over the `records_status`
    index): `console_snapshot` runs it in a worker thread, never on the event loop."""
    journal = relay.journal
    return JournalView(
        leases=relay.leases.describe(),
        counts=journal.status_counts(),
        records=journal.records(limit=RECENT_TRANSACTIONS),
        spend=relay.spend(),
        cursor=journal.latest_notice_cursor(),
    )


async def console_snapshot(relay: RelayService, keeper: Keeper | None) -> dict[str, Any]:
    """The console's view of this relayer, one read of each source; the journal is read in a worker thread
    (the loop keeps serving streams and trades while a large journal is counted).

    Raises:
        ChainUnavailableError: the node does not answer (balances and nonces are read from it).
        StoreUnavailableError: the journal's database does not answer.
    """
    statuses = await relay.signers_status()
    view = await anyio.to_thread.run_sync(journal_view, relay)
    leases = view.leases
    by_name = {str(lease["name"]): lease for lease in leases}
    signers = []
    for status in statuses:
        row = status.to_dict()
        row["balanceEther"] = ether_text(status.balance_wei)
        lease = by_name.get(SIGNER_PREFIX + status.address)
        row["lease"] = None if lease is None else {k: v for k, v in lease.items() if k != "name"}
        signers.append(row)
    counts = view.counts
    queue = {status.value: counts.get(status, 0) for status in TxStatus}
    spend = dict(view.spend)
    spend["spentEther"] = ether_text(int(spend["spentWei"]))
    spend["dailyCapEther"] = ether_text(int(spend["dailyCapWei"]))
    orders = [] if keeper is None else keeper.known_orders()
    return {
        "instance": relay.instance,
        "chainId": relay.chain.chain_id,
        "vault": relay.vault,
        "generatedAt": int(relay.clock()),
        "cursor": view.cursor.text,
        "signers": signers,
        "lowBalance": any(status.low_balance for status in statuses),
        "minSignerBalanceWei": str(relay.settings.min_signer_balance_wei),
        "leases": [lease for lease in leases if not str(lease["name"]).startswith(SIGNER_PREFIX)],
        "queue": queue,
        "unfinished": sum(counts.get(status, 0) for status in TxStatus if not status.is_final),
        "transactions": [transaction_row(record) for record in view.records],
        "keeper": {
            "configured": keeper is not None,
            "lease": by_name.get(KEEPER_LEASE),
            "ordersTotal": len(orders),
            "orders": [
                {
                    "positionId": "0x" + position_id.hex(),
                    "order": "take_profit" if order_id < FIRST_STOP_ID else "stop_loss",
                    "orderId": order_id,
                    "triggerPrice": usd_text(ref.price_e8),
                    "shareBps": ref.share_bps,
                    "trailBps": ref.trail_bps,
                    "setAtBlock": ref.block_number,
                    "logIndex": ref.log_index,
                }
                for position_id, order_id, ref in orders[:MAX_KEEPER_ORDERS]
            ],
        },
        "spend": {"policy": relay.policy.to_dict(with_allowlist=False), "today": spend},
    }
