"""The relay's window on the chain: every node call of the relayer goes through `RelayNode`.

It serializes calls on the embedded eth-tester chain (py-evm is not thread-safe), retries an unreachable node
with doubling backoff before answering `ChainUnavailableError` (503, `chain_unavailable`), and turns raw web3
answers into plain values (ints, hex strings), so the service never handles camelCase RPC dicts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound

from relayer.artifact import load_artifact
from relayer.blocks import ChainHead, head_from_block
from relayer.chain import Chain
from relayer.errors import (
    ChainUnavailableError,
    ExecutionRevertedError,
    RelayerError,
    RelayerOutOfFundsError,
)
from relayer.fees import Fees, node_fees
from relayer.gateway import fee_suggestion_wei
from relayer.relay.node_errors import Kind, classify
from relayer.revert import translate
from relayer.vault import VaultReader

T = TypeVar("T")


@dataclass(frozen=True)
class Receipt:
    """What the relay keeps of a receipt."""

    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    effective_gas_price_wei: int
    success: bool
    logs: list[Any]


class RelayNode:
    """Node access for the relayer; `retries`/`backoff_s` apply to unreachable-node errors only."""

    def __init__(
        self,
        chain: Chain,
        vault_address: str,
        *,
        retries: int = 3,
        backoff_s: float = 0.05,
        lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        self.chain = chain
        self.w3 = chain.w3
        self.vault = VaultReader(chain.w3, vault_address)
        self.retries = retries
        self.backoff_s = backoff_s
        # py-evm is not thread-safe: pass the lock every other user of the embedded chain holds, if any.
        self._lock: contextlib.AbstractContextManager[Any] = lock or (
            threading.RLock() if chain.is_embedded else contextlib.nullcontext()
        )
        self._chain_id: int | None = None
        self._fee_suggestion: tuple[int, int | None] = (-1, None)  # (block number, wei; None: no suggestion)

    def raw(self, fn: Callable[[], T]) -> T:
        """Run `fn` once under the chain lock; exceptions pass through unclassified (for the sender)."""
        with self._lock:
            return fn()

    def read(self, fn: Callable[[], T]) -> T:
        """Run a read with retries on an unreachable node; reverts and the rest become `RelayerError`s.

        Raises:
            ChainUnavailableError: when the node stays unreachable after the retries.
        """
        delay = self.backoff_s
        for attempt in range(self.retries):
            try:
                return self.raw(fn)
            except ChainUnavailableError as exc:  # already translated (e.g. by `VaultReader`): retried too
                reason = exc.message
            except RelayerError:
                raise
            except Exception as exc:
                error = classify(exc)
                if error.kind is Kind.INSUFFICIENT_FUNDS:
                    raise RelayerOutOfFundsError(
                        "the sender cannot pay for this call", **error.details()
                    ) from None
                if error.kind is not Kind.UNAVAILABLE:
                    translated = translate(exc)
                    if translated is None:
                        raise
                    raise translated from exc
                reason = error.message
            if attempt == self.retries - 1:
                raise ChainUnavailableError(
                    f"the node did not answer after {self.retries} attempts", reason=reason
                ) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.read(lambda: self.w3.eth.chain_id))
        return self._chain_id

    def head(self) -> ChainHead:
        """Raises: ChainUnavailableError (also for a node that answers no block or a malformed one)."""
        return head_from_block(self.read(lambda: self.w3.eth.get_block("latest")))

    def fees(self, head: ChainHead) -> Fees:
        """Suggested fees for the block after `head`: its base fee plus the node's priority-fee suggestion
        (asked once per block, the default tip when the node lacks `eth_maxPriorityFeePerGas`), or the node's
        gas price on a legacy chain. The relay's cap is applied by the caller."""
        block_number, suggestion = self._fee_suggestion
        if block_number != head.number:
            legacy = head.base_fee_wei is None
            suggestion = self.read(lambda: fee_suggestion_wei(self.w3, legacy=legacy))
            self._fee_suggestion = (head.number, suggestion)
        return node_fees(head.base_fee_wei, suggestion)

    def nonce(self, address: str, block: str = "pending") -> int:
        return int(self.read(lambda: self.w3.eth.get_transaction_count(to_checksum_address(address), block)))  # type: ignore[arg-type]

    def balance(self, address: str) -> int:
        return int(self.read(lambda: self.w3.eth.get_balance(to_checksum_address(address))))

    def estimate_gas(self, sender: str, to: str, data: bytes, value_wei: int = 0) -> int:
        """`eth_estimateGas` of the exact call: the simulation and the estimate in one.

        Raises:
            RelayerError: the decoded vault error when the call reverts (nothing is ever sent then).
        """
        tx: dict[str, Any] = {
            "from": to_checksum_address(sender),
            "to": to_checksum_address(to),
            "data": HexBytes(data),
        }
        if value_wei:
            tx["value"] = value_wei
        return int(self.read(lambda: self.w3.eth.estimate_gas(tx)))  # type: ignore[arg-type]

    def send_raw(self, raw_tx: bytes) -> None:
        """Broadcast signed bytes once; node errors are raised as is for `node_errors.classify`."""
        self.raw(lambda: self.w3.eth.send_raw_transaction(raw_tx))

    def receipt(self, tx_hash: str) -> Receipt | None:
        """The receipt of `tx_hash`, or None while it is not mined."""

        def fetch() -> Any:
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None

        raw = self.read(fetch)
        if raw is None or raw.get("blockNumber") is None:
            return None
        return Receipt(
            tx_hash=tx_hash,
            block_number=int(raw["blockNumber"]),
            block_hash="0x" + bytes(raw["blockHash"]).hex(),
            gas_used=int(raw["gasUsed"]),
            effective_gas_price_wei=int(raw.get("effectiveGasPrice") or 0),
            success=int(raw["status"]) == 1,
            logs=list(raw["logs"]),
        )

    def revert_reason(self, sender: str, to: str, data: bytes, gas: int, block_number: int) -> dict[str, Any]:
        """Why a mined transaction reverted, replayed as a call on the state before its block; as the record
        keeps it (a `RelayerError.to_dict()`)."""
        tx = {
            "from": to_checksum_address(sender),
            "to": to_checksum_address(to),
            "data": HexBytes(data),
            "gas": gas,
        }
        try:
            self.raw(lambda: self.w3.eth.call(tx, max(block_number - 1, 0)))  # type: ignore[arg-type]
        except Exception as exc:  # the revert is what we are after
            translated = translate(exc)
            if translated is not None:
                return translated.to_dict()
        return ExecutionRevertedError("reverted on chain (the replay did not reproduce it)").to_dict()

    def position_owner(self, position_id: bytes) -> str:
        """The owner of a position (zero address when it never existed)."""
        return self.read(lambda: self.vault.position(position_id)).owner

    def request_nonce(self, owner: str) -> int:
        """The vault's next signed-request nonce of `owner`."""
        return self.read(lambda: self.vault.nonce_of(owner))

    def decode_events(self, logs: list[Any]) -> list[dict[str, Any]]:
        """The vault events in `logs`, by name, with JSON-safe arguments (ints as strings, bytes as hex)."""
        events: list[dict[str, Any]] = []
        table = _event_names()
        for log in logs:
            if to_checksum_address(log["address"]) != self.vault.address or not log["topics"]:
                continue
            name = table.get(bytes(log["topics"][0]))
            if name is None:
                continue
            decoded = self.vault.contract.events[name]().process_log(log)
            events.append({"event": name, "args": {k: _json_value(v) for k, v in decoded["args"].items()}})
        return events


@cache
def _event_names() -> dict[bytes, str]:
    table: dict[bytes, str] = {}
    for item in load_artifact().abi:
        if item["type"] == "event":
            signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            table[keccak(text=signature)] = item["name"]
    return table


def _json_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value
