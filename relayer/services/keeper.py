"""The keeper: executes every crossed exit order once, in the vault's order, and ratchets trailing stops.

It learns which positions carry orders from the vault's `TriggerSet` events (scanned in bounded block ranges,
since nodes cap `eth_getLogs`), keyed by (position, order id): ids 0..3 take-profits, 4..5 stops, each with
its share and trail. Each pass reads every such position with its price and pending orders (`ordersOf`), and:

- when an order is crossed, submits `executeOrder(position, id)` for the one the vault executes next (stops
  first, then take-profits in the order a price reaches them; `relayer.domain.positions.next_crossed`). One
  order per position per pass: the next one is read once the first is mined, so a gap across several tiers
  executes them one after the other, each once;
- otherwise, for each trailing stop, submits `ratchetStop(position, id)` when the trigger the vault would set
  is at least `ratchet_min_bps` of the price better for the trader than the current one (the move must be
  worth the gas: a ratchet costs about the same as a tier execution, and a stop that moves by a hair protects
  nothing more).

"Once per order" holds twice over: the idempotency key names the order by the `TriggerSet` event that set it
(position, id, block, log index, price) in the keeper's own key scope, which no client can write to, so a
restarted keeper finds its earlier record in the journal instead of sending again; and the vault consumes an
executed order, and `executeOrder` names it, so a second execution would fail simulation (`OrderNotFound`)
and never be broadcast. A ratchet is keyed by the same order and the trigger it moves FROM, so it too is sent
once per step, and a ratchet still in flight is found, not repeated. An attempt that ended without being
mined (failed on chain because the price moved back within the block, expired, replaced) does not use the
order up: the next pass tries again under the next attempt number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from relayer.constants import BPS_DENOMINATOR, FIRST_STOP_ID
from relayer.domain import calldata
from relayer.domain.positions import ExitPlan, OrderView, next_crossed, ratchet_gain_bps, trailed_trigger
from relayer.domain.sponsorship import Sponsored
from relayer.errors import (
    OrderNotFoundError,
    OrderNotNextError,
    PositionNotFoundError,
    RelayerError,
    StopRatchetAgainstTraderError,
    TriggerNotCrossedError,
)
from relayer.services.metrics import NO_METRICS, Metrics
from relayer.services.relay.leases import KEEPER_LEASE
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import KEEPER_SCOPE

log = logging.getLogger("relayer.keeper")

LOG_SCAN_BLOCKS = 2_000
"""Blocks per `eth_getLogs` call: hosted nodes refuse wide ranges, and a refused scan stalls every order."""
MAX_ATTEMPTS_PER_ORDER = 5
"""Executions of one order that may end unmined (e.g. reverted as the price moved back) before it is left."""
DEFAULT_RATCHET_MIN_BPS = 10
"""A trailing stop is ratcheted when the move is at least this many basis points of the price (0.1%:
`RELAYER_KEEPER_RATCHET_MIN_BPS`)."""

_BENIGN = (TriggerNotCrossedError, PositionNotFoundError, OrderNotFoundError, OrderNotNextError)
"""What a simulation says when the chain moved since the keeper read it: nothing to do this pass."""


@dataclass(frozen=True)
class OrderRef:
    """The `TriggerSet` event that set a position's order (id 0..5) as it stands."""

    block_number: int
    log_index: int
    price_e8: int
    share_bps: int = 0
    trail_bps: int = 0


@dataclass(frozen=True)
class Execution:
    """One `executeOrder` (action `execute`) or `ratchetStop` (action `ratchet`) the keeper submitted (or
    found already submitted)."""

    position_id: bytes
    order_id: int
    record_id: str
    created: bool
    action: str = "execute"

    @property
    def is_take_profit(self) -> bool:
        return self.order_id < FIRST_STOP_ID


@dataclass
class Keeper:
    """Scan, check, execute or ratchet. `tick()` is one pass; run it periodically (`services.periodic`)."""

    relay: RelayService
    from_block: int = 0
    metrics: Metrics = NO_METRICS
    ratchet_min_bps: int = DEFAULT_RATCHET_MIN_BPS
    _orders: dict[tuple[bytes, int], OrderRef] = field(default_factory=dict)
    _next_block: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.ratchet_min_bps < BPS_DENOMINATOR:
            raise ValueError("ratchet_min_bps must be 0..9999")
        self.relay.leases.add(KEEPER_LEASE)  # one keeper across instances: whoever holds this lease

    async def tick(self) -> list[Execution]:
        """One pass: learn new orders, then execute the crossed ones and ratchet trailing stops. Returns what
        was submitted (nothing when another instance holds the keeper's lease: it keeps)."""
        leases = self.relay.leases
        if not leases.holds(KEEPER_LEASE):
            await leases.maintain()
            if not leases.holds(KEEPER_LEASE):
                return []
        await self._scan()
        executions: list[Execution] = []
        for position_id in sorted({pid for pid, _ in self._orders}):
            executions.extend(await self._check(position_id))
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
                slot = (bytes(args["positionId"]), int(args["orderId"]))
                if args["price"] == 0:
                    self._orders.pop(slot, None)
                else:
                    self._orders[slot] = OrderRef(
                        event.block_number,
                        event.log_index,
                        int(args["price"]),
                        int(args["shareBps"]),
                        int(args["trailBps"]),
                    )
                    self.metrics.keeper_order("seen", _side(slot[1]))
            start = end + 1
            self._next_block = start  # progress survives a failure in a later range

    async def _check(self, position_id: bytes) -> list[Execution]:
        quote, plan = await self.relay.chain.position_and_orders(position_id)
        position, price = quote.position, quote.price_e8
        if not position.is_open:
            self._forget(position_id)
            return []
        pending = {order.order_id for order in plan.orders}
        for slot in [slot for slot in self._orders if slot[0] == position_id and slot[1] not in pending]:
            del self._orders[slot]  # executed or cancelled in a block the scan has not reached yet
        order_id = next_crossed(position.is_long, plan.orders, price)
        if order_id is not None:
            order = plan.order(order_id)
            assert order is not None
            name = self._order_name(position_id, order)
            data = calldata.execute_order(position_id, order_id)
            execution = await self._submit(position.owner, position_id, order_id, name, data, "execute")
            return [] if execution is None else [execution]
        return await self._ratchet(position.owner, position_id, position.is_long, price, plan)

    async def _ratchet(
        self, owner: str, position_id: bytes, is_long: bool, price_e8: int, plan: ExitPlan
    ) -> list[Execution]:
        done: list[Execution] = []
        for order in plan.orders:
            if not order.is_trailing:
                continue
            proposed = trailed_trigger(is_long, price_e8, order.trail_bps)
            gain = ratchet_gain_bps(is_long, order.price_e8, proposed, price_e8)
            better = proposed > order.price_e8 if is_long else proposed < order.price_e8
            if not better or gain < self.ratchet_min_bps:
                continue
            name = f"{self._order_name(position_id, order)}:ratchet-from:{order.price_e8}"
            data = calldata.ratchet_stop(position_id, order.order_id)
            execution = await self._submit(owner, position_id, order.order_id, name, data, "ratchet")
            if execution is not None:
                done.append(execution)
        return done

    def _order_name(self, position_id: bytes, order: OrderView) -> str:
        """The order's name in idempotency keys: the event that set it. One set before `from_block` is named
        by its trigger, share and trail, so it still executes once."""
        ref = self._orders.get((position_id, order.order_id))
        if ref is None:
            ref = OrderRef(0, 0, order.price_e8, order.share_bps, order.trail_bps)
            self._orders[(position_id, order.order_id)] = ref
        return (
            f"0x{position_id.hex()}:order{order.order_id}:{ref.block_number}:{ref.log_index}:{ref.price_e8}"
        )

    async def _submit(
        self, owner: str, position_id: bytes, order_id: int, name: str, data: bytes, action: str
    ) -> Execution | None:
        side = _side(order_id)
        for attempt in range(MAX_ATTEMPTS_PER_ORDER):
            key = name if attempt == 0 else f"{name}:retry{attempt}"
            try:
                submission = await self.relay.submit_call(
                    data,
                    idempotency_key=key,
                    key_scope=KEEPER_SCOPE,
                    account=owner,
                    sponsored=Sponsored(owner, keeper=True),
                )
            except (*_BENIGN, StopRatchetAgainstTraderError):
                return None  # the price moved back, or the order or position went, since we read it
            except RelayerError as error:
                log.warning(
                    "keeper skipped %s key=%s code=%s reason=%s", action, key, error.code, error.message
                )
                return None
            if submission.created:
                log.info("keeper %s key=%s record=%s", action, key, submission.record.id)
                self.metrics.keeper_order("executed" if action == "execute" else "ratcheted", side)
                if attempt:
                    self.metrics.keeper_order("retried", side)
            if not submission.record.status.is_unsuccessful:
                return Execution(position_id, order_id, submission.record.id, submission.created, action)
        log.warning(
            "keeper gave up %s key=%s after %d unmined attempts", action, name, MAX_ATTEMPTS_PER_ORDER
        )
        return None

    def known_orders(self) -> list[tuple[bytes, int, OrderRef]]:
        """The orders this keeper tracks, (position id, order id, the event that set it), by position and id
        (read-only: the operator console). Empty until its first pass, or where another instance keeps."""
        return [(pid, order_id, ref) for (pid, order_id), ref in sorted(self._orders.items())]

    def _forget(self, position_id: bytes) -> None:
        for slot in [slot for slot in self._orders if slot[0] == position_id]:
            del self._orders[slot]


def _side(order_id: int) -> str:
    """The metrics label of an order: `tp` (ids 0..3) or `sl` (the stops, 4..5)."""
    return "tp" if order_id < FIRST_STOP_ID else "sl"
