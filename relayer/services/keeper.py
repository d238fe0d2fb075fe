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
from functools import partial
from typing import Any

from relayer.chain.vault import VaultReader
from relayer.domain import calldata
from relayer.domain.positions import crossed_trigger
from relayer.errors import PositionNotFoundError, RelayerError, TriggerNotCrossedError
from relayer.services.relay.service import KEEPER_SCOPE, RelayService

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


def _logs(event: Any, first: int, last: int) -> list[Any]:
    return list(event.get_logs(from_block=first, to_block=last))


@dataclass
class Keeper:
    """Scan, check, execute. `tick()` is one pass; run it periodically (see `relayer.services.periodic`)."""

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
        """Read `TriggerSet` events since the last pass, a bounded range at a time; price 0 forgets it."""
        head = self.relay.node.head().number
        start = self.from_block if self._next_block is None else self._next_block
        event = self.vault.contract.events.TriggerSet()
        while start <= head:
            end = min(head, start + LOG_SCAN_BLOCKS - 1)
            logs = self.relay.node.read(partial(_logs, event, start, end))
            for entry in logs:
                args = entry["args"]
                slot = (bytes(args["positionId"]), bool(args["isTakeProfit"]))
                if int(args["price"]) == 0:
                    self._orders.pop(slot, None)
                else:
                    ref = OrderRef(int(entry["blockNumber"]), int(entry["logIndex"]), int(args["price"]))
                    self._orders[slot] = ref
            start = end + 1
            self._next_block = start  # progress survives a failure in a later range

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
        side = "tp" if which else "sl"
        order = f"0x{position_id.hex()}:{side}:{ref.block_number}:{ref.log_index}:{ref.price_e8}"
        data = calldata.execute_trigger(position_id)
        for attempt in range(MAX_ATTEMPTS_PER_ORDER):
            key = order if attempt == 0 else f"{order}:retry{attempt}"
            try:
                submission = self.relay.submit_call(data, idempotency_key=key, key_scope=KEEPER_SCOPE)
            except (TriggerNotCrossedError, PositionNotFoundError):
                return None  # the price moved back, or the position closed, since we read it
            except RelayerError as error:
                log.warning("keeper skipped order=%s code=%s reason=%s", key, error.code, error.message)
                return None
            if submission.created:
                log.info("keeper executed order=%s record=%s", key, submission.record.id)
            if not submission.record.status.is_unsuccessful:
                return Execution(position_id, which, submission.record.id, submission.created)
        log.warning("keeper gave up order=%s after %d unmined attempts", order, MAX_ATTEMPTS_PER_ORDER)
        return None

    def _forget(self, position_id: bytes) -> None:
        for slot in [slot for slot in self._orders if slot[0] == position_id]:
            del self._orders[slot]
