"""A plain, synchronous signer for admin work (deploy, prices, demos, tests): sign locally, send, wait.

It estimates gas (a call that would revert raises the decoded vault error and is never sent), prices with
`relayer.fees`, signs with eth-account and waits for the receipt. The relayer service's journaled sender
(nonces, replacement, restart recovery) is `relayer.relay`; this one is for one-shot scripts.
"""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.types import TxReceipt

from relayer.errors import ExecutionRevertedError
from relayer.fees import Fees, fee_fields, gas_limit_with_margin, node_fees
from relayer.gateway import fee_suggestion_wei
from relayer.vault import call_chain


def current_fees(w3: Web3) -> Fees:
    """Fees for a transaction in the next block: the same rule as the builder and the relay (`node_fees`)."""
    block = call_chain(lambda: w3.eth.get_block("latest"))
    base_fee = block.get("baseFeePerGas")
    legacy = base_fee is None
    suggestion = call_chain(lambda: fee_suggestion_wei(w3, legacy=legacy))
    return node_fees(None if base_fee is None else int(base_fee), suggestion)


def build_transaction(
    w3: Web3, sender: str, to: str | None, data: bytes, *, nonce: int | None = None, fees: Fees | None = None
) -> dict[str, Any]:
    """A complete, signable type-2 (or legacy) transaction; estimation doubles as simulation."""
    tx: dict[str, Any] = {"from": to_checksum_address(sender), "data": HexBytes(data), "value": 0}
    if to is not None:
        tx["to"] = to_checksum_address(to)
    gas = call_chain(lambda: w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
    fees = fees or current_fees(w3)
    tx["gas"] = gas_limit_with_margin(int(gas))
    tx["chainId"] = call_chain(lambda: w3.eth.chain_id)
    if nonce is None:
        nonce = call_chain(lambda: w3.eth.get_transaction_count(tx["from"], "pending"))
    tx["nonce"] = nonce
    tx.update(fee_fields(fees))
    return tx


def send(
    w3: Web3, account: LocalAccount, to: str | None, data: bytes, *, timeout_s: float = 120
) -> TxReceipt:
    """Sign and send one call from `account`, wait for it, and fail loudly if it reverted on chain."""
    tx = build_transaction(w3, account.address, to, data)
    signed = account.sign_transaction(tx)
    tx_hash = call_chain(lambda: w3.eth.send_raw_transaction(signed.raw_transaction))
    receipt = call_chain(lambda: w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s))
    if receipt["status"] != 1:
        raise ExecutionRevertedError("transaction reverted on chain", transactionHash=tx_hash.to_0x_hex())
    return receipt
