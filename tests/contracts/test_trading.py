"""Opening and closing: events, stored state, the close-all sentinel, slippage bounds, size bounds, ids."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.contract import Contract

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader
from relayer.constants import CLOSE_ALL_SIZE, MAX_POSITION_SIZE, PRICE_DECIMALS
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.positions import price_within_bound, realized_pnl_e8
from relayer.domain.units import format_fixed
from relayer.errors import (
    InvalidSizeError,
    PositionNotFoundError,
    PriceSlippageError,
    SizeDeltaExceedsPositionError,
)
from tests.conftest import units, usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event, event_names, reverts

BTC = symbol_to_bytes32("BTCUSDT")
BTC_PRICE = usd("96000")


def open_call(is_long: bool, size: int, allowed_price: int = 0, market: bytes = BTC) -> bytes:
    return calldata.encode_call("openPosition", market, is_long, size, allowed_price)


@pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])
def test_open_records_the_position_at_the_oracle_price(
    vault: VaultReader, contract: Contract, transact: Transact, trader: LocalAccount, is_long: bool
) -> None:
    receipt = transact(trader, open_call(is_long, units("0.42")))

    assert event_names(contract, receipt) == ["PositionOpened"]
    opened = event(contract, receipt, "PositionOpened")
    position_id = bytes(opened["positionId"])
    assert opened == {
        "positionId": opened["positionId"],
        "owner": trader.address,
        "market": BTC,
        "isLong": is_long,
        "size": units("0.42"),
        "entryPrice": BTC_PRICE,
    }
    position = vault.position(position_id)
    assert (position.owner, position.market, position.is_long) == (trader.address, "BTCUSDT", is_long)
    assert (position.size, position.entry_price_e8) == (units("0.42"), BTC_PRICE)
    assert not position.take_profit.active
    assert not position.stop_loss.active
    assert vault.position_ids_of(trader.address) == [position_id]


@pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])
def test_partial_then_close_all_sentinel_closes_what_remains(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    is_long: bool,
) -> None:
    position_id = open_position(is_long=is_long, size="0.42")
    set_market_price("BTCUSDT", "97250.5")
    exit_price = usd("97250.5")

    partial = event(
        contract,
        transact(trader, calldata.close_position(position_id, units("0.14"), 0)),
        "PositionDecreased",
    )
    assert partial == {
        "positionId": partial["positionId"],
        "owner": trader.address,
        "sizeDelta": units("0.14"),
        "remainingSize": units("0.28"),
        "exitPrice": exit_price,
        "realizedPnl": realized_pnl_e8(is_long, BTC_PRICE, exit_price, units("0.14")),
    }
    assert bytes(partial["positionId"]) == position_id
    assert vault.position(position_id).size == units("0.28")

    rest = event(
        contract,
        transact(trader, calldata.close_position(position_id, CLOSE_ALL_SIZE, 0)),
        "PositionDecreased",
    )
    assert (rest["sizeDelta"], rest["remainingSize"]) == (units("0.28"), 0)
    assert rest["realizedPnl"] == realized_pnl_e8(is_long, BTC_PRICE, exit_price, units("0.28"))
    assert vault.position(position_id).size == 0


def test_full_close_by_exact_size(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
) -> None:
    position_id = open_position(size="1")
    closed = event(
        contract, transact(trader, calldata.close_position(position_id, units("1"), 0)), "PositionDecreased"
    )
    assert (closed["sizeDelta"], closed["remainingSize"], closed["realizedPnl"]) == (units("1"), 0, 0)
    assert vault.position(position_id).size == 0


@pytest.mark.parametrize(
    ("partial_first", "size_delta", "error", "details"),
    [
        (False, 0, InvalidSizeError, {"size": "0"}),
        (True, 0, InvalidSizeError, {"size": "0"}),
        (
            False,
            units("1") + 1,
            SizeDeltaExceedsPositionError,
            {"sizeDelta": str(units("1") + 1), "size": str(units("1"))},
        ),
        (
            True,
            units("0.75") + 1,
            SizeDeltaExceedsPositionError,
            {"sizeDelta": str(units("0.75") + 1), "size": str(units("0.75"))},
        ),
        (
            True,
            CLOSE_ALL_SIZE - 1,
            SizeDeltaExceedsPositionError,
            {"sizeDelta": str(CLOSE_ALL_SIZE - 1), "size": str(units("0.75"))},
        ),
    ],
    ids=["zero", "zero-after-partial", "above-size", "above-remaining", "max-minus-one-is-not-the-sentinel"],
)
def test_close_size_bounds(
    vault: VaultReader,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    partial_first: bool,
    size_delta: int,
    error: type[InvalidSizeError | SizeDeltaExceedsPositionError],
    details: dict[str, str],
) -> None:
    position_id = open_position(size="1")
    if partial_first:
        transact(trader, calldata.close_position(position_id, units("0.25"), 0))
    with reverts(error, **details) as info:
        transact(trader, calldata.close_position(position_id, size_delta, 0))
    # The stable codes clients see (HTTP, CLI, MCP), decoded from the vault's custom errors.
    assert info.value.code == ("invalid_size" if size_delta == 0 else "size_delta_exceeds_position")
    assert info.value.details["revert"] == ("InvalidSize" if size_delta == 0 else "SizeDeltaTooLarge")
    assert vault.position(position_id).size == (units("0.75") if partial_first else units("1"))


@pytest.mark.parametrize("size_delta", [CLOSE_ALL_SIZE, 1], ids=["close-all", "one-unit"])
def test_closing_a_closed_or_unknown_position_is_position_not_found(
    transact: Transact, trader: LocalAccount, open_position: Callable[..., bytes], size_delta: int
) -> None:
    position_id = open_position()
    transact(trader, calldata.close_position(position_id, CLOSE_ALL_SIZE, 0))
    for missing in (position_id, b"\x42" * 32):
        with reverts(PositionNotFoundError, positionId="0x" + missing.hex(), revert="PositionNotFound"):
            transact(trader, calldata.close_position(missing, size_delta, 0))


@pytest.mark.parametrize(
    ("size", "accepted"),
    [(0, False), (1, True), (MAX_POSITION_SIZE, True), (MAX_POSITION_SIZE + 1, False), (2**256 - 1, False)],
    ids=["zero", "one-unit", "uint128-max", "uint128-max-plus-one", "uint256-max"],
)
def test_open_size_bounds(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    size: int,
    accepted: bool,
) -> None:
    if not accepted:
        with reverts(InvalidSizeError, size=str(size), revert="InvalidSize"):
            transact(trader, open_call(True, size))
        assert vault.position_ids_of(trader.address) == []
        return
    opened = event(contract, transact(trader, open_call(True, size)), "PositionOpened")
    assert vault.position(bytes(opened["positionId"])).size == size == opened["size"]


PRICE_BOUND_CASES = [
    # (is_long, allowedPrice relative to the 96000 oracle price, or None for 0 = no bound)
    (True, None),
    (True, -1),
    (True, 0),
    (True, 1),
    (False, None),
    (False, -1),
    (False, 0),
    (False, 1),
]


def _allowed(offset: int | None) -> int:
    return 0 if offset is None else BTC_PRICE + offset


@pytest.mark.parametrize(("is_long", "offset"), PRICE_BOUND_CASES)
def test_open_allowed_price(
    vault: VaultReader, transact: Transact, trader: LocalAccount, is_long: bool, offset: int | None
) -> None:
    """A long pays at most allowedPrice, a short sells at least at it; 0 means no bound."""
    allowed = _allowed(offset)
    accepted = allowed == 0 or (allowed >= BTC_PRICE if is_long else allowed <= BTC_PRICE)
    call = open_call(is_long, units("1"), allowed)
    if accepted:
        transact(trader, call)
        assert len(vault.position_ids_of(trader.address)) == 1
        return
    with reverts(
        PriceSlippageError,
        price=format_fixed(BTC_PRICE, PRICE_DECIMALS),
        allowedPrice=format_fixed(allowed, PRICE_DECIMALS),
        revert="PriceSlippage",
    ):
        transact(trader, call)


@pytest.mark.parametrize(("is_long", "offset"), PRICE_BOUND_CASES)
def test_close_allowed_price(
    vault: VaultReader,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    is_long: bool,
    offset: int | None,
) -> None:
    """Closing a long reverts below allowedPrice, a short above it (relayer.domain.positions mirrors it)."""
    position_id = open_position(is_long=is_long)
    allowed = _allowed(offset)
    call = calldata.close_position(position_id, units("0.5"), allowed)
    accepted = allowed == 0 or (allowed <= BTC_PRICE if is_long else allowed >= BTC_PRICE)
    assert price_within_bound(is_long, BTC_PRICE, allowed) == accepted
    if accepted:
        transact(trader, call)
        assert vault.position(position_id).size == units("0.5")
        return
    with reverts(PriceSlippageError, price=format_fixed(BTC_PRICE, 8), allowedPrice=format_fixed(allowed, 8)):
        transact(trader, call)
    assert vault.position(position_id).size == units("1")


def test_position_ids_are_unique_and_never_reused(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    transact: Transact,
    trader: LocalAccount,
    other_trader: LocalAccount,
    open_position: Callable[..., bytes],
) -> None:
    """Ids are keccak(chainId, vault, counter): unique across vaults and chains, and closing frees none."""
    first = [open_position(), open_position(owner=other_trader), open_position(market="ETHUSDT")]
    transact(trader, calldata.close_position(first[0], CLOSE_ALL_SIZE, 0))
    later = [open_position(), open_position(owner=other_trader)]
    ids = first + later
    assert len(set(ids)) == len(ids)
    chain_id = chain.w3.eth.chain_id
    assert ids == [
        keccak(encode(["uint256", "address", "uint256"], [chain_id, deployment.address, n]))
        for n in range(1, len(ids) + 1)
    ]
    assert vault.position_ids_of(trader.address) == [ids[0], ids[2], ids[3]]
    assert vault.position_ids_of(other_trader.address) == [ids[1], ids[4]]
