"""The keeper: executes every take-profit / stop-loss whose price has been crossed, once per order.

It learns which positions carry orders from the vault's `TriggerSet` events, reads each candidate's position
and price, and for a crossed order submits `executeTrigger` through the relayer's sender (journal, nonces,
replacement). "Once per order" holds twice over: the idempotency key names the order by the event that set it
(position, side, block, log index), so a restarted keeper finds its earlier record in the journal instead of
sending again; and the vault consumes an executed order, so a second execution would fail simulation and never
be broadcast.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from relayer import calldata
from relayer.errors import PositionNotFoundError, RelayerError, TriggerNotCrossedError
from relayer.positions import crossed_trigger
from relayer.relay.service import RelayService
from relayer.vault import VaultReader

log = logging.getLogger("relayer.keeper")


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
    """Scan, check, execute. `tick()` is one pass; run it periodically (see `relayer.periodic`)."""

    vault: VaultReader
    relay: RelayService
    from_block: int = 0
    _orders: dict[tuple[bytes, bool], OrderRef] = field(default_factory=dict)
    _next_block: int | None = None

    def tick(self) -> list[Execution]:
        """One pass: learn new orders, then execute the crossed ones. Returns what was submitted."""
        self._scan()
        executions: list[Execution] = []
        for position_id in sorted({pid for pid, _ in self._orders}):
            execution = self._check(position_id)
            if execution is not None:
                executions.append(execution)
        return executions

    def _scan(self) -> None:
        """Read `TriggerSet` events since the last pass; a cancelled order (price 0) is forgotten."""
        head = self.relay.node.head().number
        start = self.from_block if self._next_block is None else self._next_block
        if start > head:
            return
        event = self.vault.contract.events.TriggerSet()
        logs = self.relay.node.read(lambda: list(event.get_logs(from_block=start, to_block=head)))
        for entry in logs:
            args = entry["args"]
            slot = (bytes(args["positionId"]), bool(args["isTakeProfit"]))
            if int(args["price"]) == 0:
                self._orders.pop(slot, None)
            else:
                ref = OrderRef(int(entry["blockNumber"]), int(entry["logIndex"]), int(args["price"]))
                self._orders[slot] = ref
        self._next_block = head + 1

    def _check(self, position_id: bytes) -> Execution | None:
        position = self.relay.node.read(lambda: self.vault.position(position_id))
        if not position.is_open:
            self._forget(position_id)
            return None
        price = self.relay.node.read(lambda: self.vault.price(position.market)).price_e8
        which = crossed_trigger(position, price)
        if which is None:
            return None
        ref = self._orders.get((position_id, which))
        if ref is None:  # set before `from_block`: name it by its price so it still executes once
            ref = OrderRef(0, 0, (position.take_profit if which else position.stop_loss).price_e8)
        key = f"keeper:0x{position_id.hex()}:{'tp' if which else 'sl'}:{ref.block_number}:{ref.log_index}"
        try:
            submission = self.relay.submit_call(calldata.execute_trigger(position_id), idempotency_key=key)
        except (TriggerNotCrossedError, PositionNotFoundError):
            return None  # the price moved back, or the position closed, since we read it
        except RelayerError as error:
            log.warning("keeper skipped order=%s code=%s reason=%s", key, error.code, error.message)
            return None
        if submission.created:
            log.info("keeper executed order=%s record=%s", key, submission.record.id)
            self._orders.pop((position_id, which), None)
        return Execution(position_id, which, submission.record.id, submission.created)

    def _forget(self, position_id: bytes) -> None:
        for slot in [slot for slot in self._orders if slot[0] == position_id]:
            del self._orders[slot]
