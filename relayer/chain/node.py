"""The relay's window on the chain: every node call of the relayer goes through `RelayNode`.

It serializes calls on the embedded eth-tester chain (py-evm is not thread-safe), retries an unreachable node
with doubling backoff before answering `ChainUnavailableError` (503, `chain_unavailable`), and turns raw web3
answers into plain values (ints, hex strings), so the service never handles camelCase RPC dicts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3.exceptions import MethodUnavailable, TransactionNotFound, Web3RPCError
from web3.types import RPCEndpoint

from relayer.chain.artifact import load_artifact
from relayer.chain.connect import Chain, TopCall
from relayer.chain.node_errors import Kind, classify
from relayer.chain.revert import error_from_revert, revert_data, translate
from relayer.chain.vault import VaultReader
from relayer.chain.web3_gateway import fee_suggestion_wei
from relayer.domain.blocks import ChainHead, head_from_block
from relayer.domain.fees import Fees, node_fees
from relayer.domain.records import Mined
from relayer.errors import (
    ChainUnavailableError,
    ExecutionRevertedError,
    RelayerError,
    RelayerOutOfFundsError,
)

T = TypeVar("T")

log = logging.getLogger("relayer.relay")

_TOP_CALL_TRACER = {"tracer": "callTracer", "tracerConfig": {"onlyTopCall": True}}
"""`debug_traceTransaction` options: geth's call tracer (anvil, erigon, reth have it too), top call only."""

_RPC_METHOD_UNSUPPORTED = frozenset({-32601, -32004})
"""JSON-RPC codes for "method not found" (JSON-RPC 2.0) and "method not supported" (EIP-1474)."""


@dataclass(frozen=True)
class Receipt:
    """A receipt as the node gave it: what the record keeps of it (`mined`, its `events` still empty), and
    what only settling the record needs beside it."""

    mined: Mined
    transaction_index: int
    """The transaction's place in its block: a replay on the state before the block is honest only at 0."""
    logs: list[Any]
    """The raw logs, decoded into `mined.events` (`decode_events`) once the transaction is known to have
    succeeded."""


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
        self._node_traces = True  # until the node answers that it has no debug_traceTransaction

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
        mined = Mined(
            tx_hash=tx_hash,
            block_number=int(raw["blockNumber"]),
            block_hash="0x" + bytes(raw["blockHash"]).hex(),
            gas_used=int(raw["gasUsed"]),
            effective_gas_price_wei=int(raw.get("effectiveGasPrice") or 0),
            success=int(raw["status"]) == 1,
        )
        return Receipt(mined, transaction_index=int(raw["transactionIndex"]), logs=list(raw["logs"]))

    def revert_reason(self, receipt: Receipt, sender: str, to: str, data: bytes, gas: int) -> dict[str, Any]:
        """Why a mined transaction reverted, as the record keeps it (a `RelayerError.to_dict()`).

        The reason has to be read at the transaction's own position in its block: an earlier transaction of
        the same block (another close of the same position, say) may be what made it revert, and a call
        replayed on the state before the block would then succeed. So, first that applies:

        1. The embedded chain: auto-mining puts each transaction alone in its block, but with it off (as
           tests do) several share one, so the block is re-executed in process up to the transaction
           (`Chain.replay_in_block`): exact either way.
        2. A node with the debug namespace (anvil, geth, erigon, reth, nethermind): its trace of the
           transaction (`debug_traceTransaction`, call tracer, top call only) gives the revert data. A node
           that answers the method is not found or not supported is never asked again; any other refusal
           falls back for this transaction only.
        3. A node without traces: the call replayed with `eth_call` on the state before the block, but only
           when the transaction was its block's first (index 0), where that state is the one it met (the
           replay runs in the previous block's context: a revert that depends on the block's number or time
           may not reproduce). Anywhere else there is no honest replay, and the error says so.

        Revert data is decoded by selector (`relayer.chain.revert`), like every revert. When the in-process
        replay itself fails (py-evm refusing the block, say), the record still fails, with an error that says
        the replay could not tell why: raising instead would leave the record `submitted` and fail every
        round.

        Raises:
            ChainUnavailableError: the node did not answer (the loop settles the receipt again later).
        """
        tx_hash, block_number = receipt.mined.tx_hash, receipt.mined.block_number
        if self.chain.is_embedded:
            try:
                top = self.raw(lambda: self.chain.replay_in_block(tx_hash, block_number))
            except Exception as exc:  # the in-process EVM refused to re-execute: nothing to retry
                log.warning("replay of %s failed: %r", tx_hash, exc)
                return ExecutionRevertedError(
                    f"reverted on chain; could not replay it: {type(exc).__name__}: {exc}"[:300],
                    replayError=type(exc).__name__,
                ).to_dict()
        else:
            top = self._trace(tx_hash)
        if top is not None:
            return _reason_from_top_call(top).to_dict()
        if receipt.transaction_index > 0:
            return ExecutionRevertedError(
                "reverted on chain; the node offers no trace to tell why, and a replay on the state before"
                " its block would miss the earlier transactions of that block",
                transactionIndex=receipt.transaction_index,
            ).to_dict()
        return self._replay_before_block(sender, to, data, gas, block_number).to_dict()

    def _trace(self, tx_hash: str) -> TopCall | None:
        """How the transaction's top call ended, by the node's `debug_traceTransaction`; None when the node
        does not trace (remembered when it lacks the method) or answers something else than a call trace."""
        if not self._node_traces:
            return None

        def trace() -> Any:
            try:
                return self.w3.manager.request_blocking(
                    RPCEndpoint("debug_traceTransaction"), [tx_hash, _TOP_CALL_TRACER]
                )
            except Web3RPCError as exc:
                response = exc.rpc_response or {}
                error = response.get("error") if isinstance(response, dict) else None
                code = error.get("code") if isinstance(error, dict) else None
                if isinstance(exc, MethodUnavailable) or code in _RPC_METHOD_UNSUPPORTED:
                    self._node_traces = False
                    log.warning("the node has no debug_traceTransaction; revert reasons come from replays")
                else:
                    log.warning("debug_traceTransaction of %s refused: %s", tx_hash, exc.message)
                return None

        return _top_call(self.read(trace))

    def _replay_before_block(
        self, sender: str, to: str, data: bytes, gas: int, block_number: int
    ) -> RelayerError:
        """The call replayed with `eth_call` on the state before `block_number` (see `revert_reason`)."""
        tx = {
            "from": to_checksum_address(sender),
            "to": to_checksum_address(to),
            "data": HexBytes(data),
            "gas": gas,
        }
        block = max(block_number - 1, 0)

        def replay() -> RelayerError | None:
            try:
                self.w3.eth.call(tx, block)  # type: ignore[arg-type]
            except Exception as exc:
                revert = revert_data(exc)
                if revert is None:  # not a revert: `read` retries or translates it
                    raise
                return error_from_revert(revert)  # the revert is what we are after
            return None

        try:
            reverted = self.read(replay)
        except ChainUnavailableError:
            raise
        except (RelayerError, Web3RPCError) as exc:  # pruned state, an unfunded sender, out of gas...
            return ExecutionRevertedError(
                "reverted on chain; the node answered its replay with an error that is not a revert",
                nodeMessage=str(exc)[:300],
            )
        if reverted is not None:
            return reverted
        return ExecutionRevertedError("reverted on chain (the replay did not reproduce it)")

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
        for entry in logs:
            if to_checksum_address(entry["address"]) != self.vault.address or not entry["topics"]:
                continue
            name = table.get(bytes(entry["topics"][0]))
            if name is None:
                continue
            decoded = self.vault.contract.events[name]().process_log(entry)
            events.append({"event": name, "args": {k: _json_value(v) for k, v in decoded["args"].items()}})
        return events


def _top_call(trace: Any) -> TopCall | None:
    """A call tracer's top call (`{"type", "output", "error", ...}`), or None for anything else."""
    if not isinstance(trace, Mapping) or not isinstance(trace.get("type"), str):
        return None
    error, output = trace.get("error"), trace.get("output") or "0x"
    if not (error is None or isinstance(error, str)) or not isinstance(output, str):
        return None
    try:
        return TopCall(error, bytes.fromhex(output.removeprefix("0x")))
    except ValueError:
        return None


def _reason_from_top_call(top: TopCall) -> RelayerError:
    """The error a failed receipt's top call tells: its revert data decoded, else the EVM's own reason."""
    if top.error is None:
        return ExecutionRevertedError("the receipt says reverted, yet its trace shows the call succeeding")
    if top.output:
        return error_from_revert(top.output)
    return ExecutionRevertedError(f"reverted on chain without revert data: {top.error}", evmError=top.error)


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
