"""The keeper: executes every take-profit / stop-loss whose price has been crossed, once per order.

It learns which positions carry orders from the vault's `TriggerSet` events (scanned in bounded block ranges,
since nodes cap `eth_getLogs`), reads each candidate's position and price, and for a crossed order submits
`executeTrigger` through the relayer's sender (journal, nonces, replacement). "Once per order" holds twice
over: the idempotency key names the order by the event that set it (position, side, block, log index) in the
keeper's own key scope, which no client can write to, so a restarted keeper finds its earlier record in the
journal instead of sending again; and the vault consumes an executed order, so a second execution would
fail simulation and never be broadcast. An attempt that ended without being mined (failed on chain because
the price moved back within the block, expired, replaced) does not use the order up: the next pass tries
again under the next attempt number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from relayer.domain import calldata
from relayer.domain.positions import crossed_trigger
from relayer.domain.sponsorship import Sponsored
from relayer.errors import PositionNotFoundError, RelayerError, TriggerNotCrossedError
from relayer.services.metrics import NO_METRICS, Metrics
from relayer.services.relay.leases import KEEPER_LEASE
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import KEEPER_SCOPE

log = logging.getLogger("relayer.keeper")

LOG_SCAN_BLOCKS = 2_000
"""Blocks per `eth_getLogs` call: hosted nodes refuse wide ranges, and a refused scan stalls every order."""
MAX_ATTEMPTS_PER_ORDER = 5
"""Executions of one order that may end unmined (e.g. reverted as the price moved back) before it is left."""


@dataclass(frozen=True)
class OrderRef:
    """The event that set a position's current take-profit or stop-loss."""

    block_number: int
    log_index: int
    price_e8: int


@dataclass(frozen=True)
class Execution:
    """One `executeTrigger` the keeper submitted (or found already submitted)."""

    position_id: bytes
    is_take_profit: bool
    record_id: str
    created: bool


@dataclass
class Keeper:
    """Scan, check, execute. `tick()` is one pass; run it periodically (see `relayer.services.periodic`)."""

    relay: RelayService
    from_block: int = 0
    metrics: Metrics = NO_METRICS
    _orders: dict[tuple[bytes, bool], OrderRef] = field(default_factory=dict)
    _next_block: int | None = None

    def __post_init__(self) -> None:
        self.relay.leases.add(KEEPER_LEASE)  # one keeper across instances: whoever holds this lease

    async def tick(self) -> list[Execution]:
        """One pass: learn new orders, then execute the crossed ones. Returns what was submitted (nothing
        when another instance holds the keeper's lease: it keeps)."""
        leases = self.relay.leases
        if not leases.holds(KEEPER_LEASE):
            await leases.maintain()
            if not leases.holds(KEEPER_LEASE):
                return []
        await self._scan()
        executions: list[Execution] = []
        for position_id in sorted({pid for pid, _ in self._orders}):
            execution = await self._check(position_id)
            if execution is not None:
                executions.append(execution)
        return executions

    async def _scan(self) -> None:
        """Read `TriggerSet` events since the last pass, a bounded range at a time; price 0 forgets it."""
        chain = self.relay.chain
        head = (await chain.head()).number
        start = self.from_block if self._next_block is None else self._next_block
        while start <= head:
            end = min(head, start + LOG_SCAN_BLOCKS - 1)
            for event in await chain.vault_events("TriggerSet", start, end):
                args = event.args
                slot = (bytes(args["positionId"]), bool(args["isTakeProfit"]))
                if args["price"] == 0:
                    self._orders.pop(slot, None)
                else:
                    self._orders[slot] = OrderRef(event.block_number, event.log_index, args["price"])
                    self.metrics.keeper_order("seen", "tp" if slot[1] else "sl")
            start = end + 1
            self._next_block = start  # progress survives a failure in a later range

    async def _check(self, position_id: bytes) -> Execution | None:
        quote = await self.relay.chain.position(position_id)  # the position with its market's price
        position, price = quote.position, quote.price_e8
        if not position.is_open:
            self._forget(position_id)
            return None
        which = crossed_trigger(position, price)
        if which is None:
            return None
        ref = self._orders.get((position_id, which))
        if ref is None:  # set before `from_block`: name it by its price so it still executes once
            ref = OrderRef(0, 0, (position.take_profit if which else position.stop_loss).price_e8)
        side = "tp" if which else "sl"
        order = f"0x{position_id.hex()}:{side}:{ref.block_number}:{ref.log_index}:{ref.price_e8}"
        data = calldata.execute_trigger(position_id)
        for attempt in range(MAX_ATTEMPTS_PER_ORDER):
            key = order if attempt == 0 else f"{order}:retry{attempt}"
            try:
                submission = await self.relay.submit_call(
                    data,
                    idempotency_key=key,
                    key_scope=KEEPER_SCOPE,
                    account=position.owner,
                    sponsored=Sponsored(position.owner, keeper=True),
                )
            except (TriggerNotCrossedError, PositionNotFoundError):
                return None  # the price moved back, or the position closed, since we read it
            except RelayerError as error:
                log.warning("keeper skipped order=%s code=%s reason=%s", key, error.code, error.message)
                return None
            if submission.created:
                log.info("keeper executed order=%s record=%s", key, submission.record.id)
                self.metrics.keeper_order("executed", side)
                if attempt:
                    self.metrics.keeper_order("retried", side)
            if not submission.record.status.is_unsuccessful:
                return Execution(position_id, which, submission.record.id, submission.created)
        log.warning("keeper gave up order=%s after %d unmined attempts", order, MAX_ATTEMPTS_PER_ORDER)
        return None

    def known_orders(self) -> list[tuple[bytes, bool, OrderRef]]:
        """The orders this keeper tracks, (position id, is take-profit, the event that set it), by position
        (read-only: the operator console). Empty until its first pass, or where another instance keeps."""
        return [(pid, is_tp, ref) for (pid, is_tp), ref in sorted(self._orders.items())]

    def _forget(self, position_id: bytes) -> None:
        for slot in [slot for slot in self._orders if slot[0] == position_id]:
            del self._orders[slot]
