"""A plain, synchronous signer for admin work (deploy, prices, demos, tests): sign locally, send, wait.

It estimates gas (a call that would revert raises the decoded vault error and is never sent), prices with
`relayer.domain.fees`, signs with eth-account and waits for the receipt. The relayer service's journaled
sender (nonces, replacement, restart recovery) is `relayer.services.relay`; this one is for one-shot scripts
and the `relayer open`, `relayer price set` and `relayer operator` commands (`open_position`,
`set_market_price`, `set_operator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.types import RPCEndpoint, TxParams, TxReceipt, Wei

from relayer.chain.vault import VaultReader, call_chain
from relayer.constants import RELAYER_RIGHTS
from relayer.domain import calldata
from relayer.domain.blocks import quantity
from relayer.domain.exits import allowed_price_for_slippage
from relayer.domain.fees import Fees, fee_fields, gas_limit_with_margin, node_fees
from relayer.domain.markets import bytes32_to_symbol, normalize_symbol
from relayer.domain.operators import grant_expiry
from relayer.domain.positions import NO_ORDER, Position
from relayer.domain.requests import parse_owner
from relayer.errors import ExecutionRevertedError, NotAuthorizedError, PriceNotSetError

NO_PRICE_BOUND = 0
"""`allowedPrice` 0: the vault fills at whatever its oracle price is. Only ever chosen explicitly."""


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
    call: TxParams = {"from": to_checksum_address(sender), "data": HexBytes(data), "value": Wei(0)}
    if to is not None:
        call["to"] = to_checksum_address(to)
    gas = call_chain(lambda: w3.eth.estimate_gas(call))
    tx: dict[str, Any] = dict(call)
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


@dataclass(frozen=True, kw_only=True)
class OpenedPosition(Position):
    """A position as the vault's `PositionOpened` event recorded it (no orders yet), and the transaction
    that opened it."""

    transaction_hash: str
    block_number: int
    gas_used: int


def open_price_bound(*, is_long: bool, price_e8: int, slippage_bps: int) -> int:
    """The worst entry within `slippage_bps` of `price_e8` for opening this side.

    Opening a long buys, so its bound is a maximum; opening a short sells, so a minimum: the bounds of
    closing the opposite side (`exits.allowed_price_for_slippage`), rounded toward the price the same way.
    """
    return allowed_price_for_slippage(is_long=not is_long, price_e8=price_e8, slippage_bps=slippage_bps)


def market_open_price_bound(w3: Web3, vault: str, market: str, *, is_long: bool, slippage_bps: int) -> int:
    """The allowed price of a market order: `slippage_bps` from the market's current oracle price.

    Raises:
        InvalidMarketError: `market` is not a symbol.
        PriceNotSetError: the market has no price (no bound can be derived from nothing).
        ChainUnavailableError: the node does not answer.
    """
    price_e8 = VaultReader(w3, vault).price(market).price_e8
    if price_e8 == 0:
        raise PriceNotSetError.of_market(normalize_symbol(market, "market"))
    return open_price_bound(is_long=is_long, price_e8=price_e8, slippage_bps=slippage_bps)


def open_position(
    w3: Web3,
    trader: LocalAccount,
    vault: str,
    market: str,
    *,
    is_long: bool,
    size: int,
    allowed_price_e8: int,
) -> OpenedPosition:
    """Open a position for `trader` at the market's oracle price and return what the chain recorded.

    `allowed_price_e8` is the worst acceptable entry (a long pays at most it, a short sells at least at it):
    `market_open_price_bound` for a market order, or `NO_PRICE_BOUND`, said out loud. The call is simulated
    first (`send`), so a revert is raised decoded and nothing is sent.

    Raises:
        InvalidMarketError: `market` is not a symbol.
        RelayerError: the vault's error (`price_slippage`, `stale_price`, `price_not_set`, `invalid_size`),
            or `chain_unavailable`.
    """
    receipt = send(w3, trader, vault, calldata.open_position(market, is_long, size, allowed_price_e8))
    (event,) = VaultReader(w3, vault).contract.events.PositionOpened().process_receipt(receipt)
    args = event["args"]
    return OpenedPosition(
        position_id=bytes(args["positionId"]),
        owner=to_checksum_address(args["owner"]),
        market=bytes32_to_symbol(bytes(args["market"])),
        is_long=bool(args["isLong"]),
        size=int(args["size"]),
        entry_price_e8=int(args["entryPrice"]),
        take_profit=NO_ORDER,
        stop_loss=NO_ORDER,
        transaction_hash=receipt["transactionHash"].to_0x_hex(),
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
    )


def set_market_price(w3: Web3, keeper: LocalAccount, vault: str, market: str, price_e8: int) -> TxReceipt:
    """Set a market's oracle price (adding the market if it is new) from one of the vault's price keepers.

    The role is checked first: the vault's own revert for a stranger, `NotAuthorized(caller)`, is the one it
    uses for positions, and would read as "may not act on this position".

    Raises:
        InvalidMarketError: `market` is not a symbol.
        NotAuthorizedError: `keeper` is not a price keeper of this vault.
        RelayerError: `invalid_price` from the vault, or `chain_unavailable`.
    """
    payload = calldata.set_price(market, price_e8)  # a malformed symbol fails before any node call
    reader = VaultReader(w3, vault)
    if not call_chain(lambda: reader.contract.functions.isPriceKeeper(keeper.address).call()):
        raise NotAuthorizedError(
            f"{keeper.address} is not a price keeper of vault {reader.address} (the admin approves keepers"
            " with setPriceKeeper)",
            caller=keeper.address,
        )
    return send(w3, keeper, vault, payload)


def set_operator(
    w3: Web3, owner: LocalAccount, vault: str, operator: str, *, approved: bool, expires_at: int | None = None
) -> TxReceipt:
    """Grant `operator` the relayer's reduce-only rights over every position of `owner` (`RELAYER_RIGHTS`:
    close, set take-profits, tighten stops; never loosen or cancel a stop) until `expires_at` (unix seconds;
    None: a year from the latest block, see `grant_expiry`), or (`approved` False) revoke every right. How an
    account lets the relayer's signers act for it (API-key trading answers 409 `operator_not_approved` until
    then).

    Raises:
        InvalidFieldError: `operator` is not an address.
        RelayerError: `chain_unavailable`.
    """
    address = parse_owner(operator, "operator")
    if not approved:
        return send(w3, owner, vault, calldata.set_operator_rights(address, 0, 0))
    if expires_at is None:
        expires_at = grant_expiry(int(call_chain(lambda: w3.eth.get_block("latest"))["timestamp"]))
    return send(w3, owner, vault, calldata.set_operator_rights(address, RELAYER_RIGHTS, expires_at))


def fee_suggestion_wei(w3: Web3, *, legacy: bool) -> int | None:
    """What the node suggests paying per gas for the next block, for `relayer.domain.fees.node_fees`: its gas
    price on a legacy chain, else its priority fee (`eth_maxPriorityFeePerGas`); None when the node answers
    that method with an error (most often: it lacks it), as `ChainClient` does. Transport errors pass through
    as raised (the caller translates them).
    """
    if legacy:
        return quantity(w3.eth.gas_price, "gas price")
    try:
        value = w3.manager.request_blocking(RPCEndpoint("eth_maxPriorityFeePerGas"), [])
    except Web3RPCError:
        return None
    return quantity(value, "priority fee")
