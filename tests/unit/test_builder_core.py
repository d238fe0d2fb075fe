"""The builder's pure core: calldata per action, the checks against a chain state, the preview, the signable
transaction, and the fast return-data decoder. No node: chain states are built by hand."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from relayer.chain.decoding import decode_position_with_price
from relayer.chain.quotes import ChainHead, CloseState, PositionQuote
from relayer.chain.revert import error_from_revert
from relayer.constants import CLOSE_ALL_SIZE, UINT256_MAX
from relayer.domain import calldata
from relayer.domain.fees import Fees
from relayer.domain.positions import Position, TriggerOrder
from relayer.domain.requests import CloseAction, CloseRequest, parse_close_request
from relayer.domain.units import format_fixed
from relayer.errors import (
    ExecutionRevertedError,
    InvalidFieldError,
    InvalidTriggerPriceError,
    NotAuthorizedError,
    PositionNotFoundError,
    PriceNotSetError,
    PriceSlippageError,
    SizeDeltaExceedsPositionError,
    StalePriceError,
)
from relayer.services.builder import assemble, check_request, encode_request
from relayer.services.builder_answers import BuiltTransaction, ClosePreview

OWNER = Account.from_key("0x" + "11" * 32)
VAULT = "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"
PID = bytes.fromhex("cd" * 32)
ONE = 10**18
DEFAULT_FEES = Fees(3_000_000_000, 1_000_000_000)
USD = 10**8


def position(
    *, is_long: bool = True, size: int = ONE, entry_usd: int = 96_000, **orders: TriggerOrder
) -> Position:
    return Position(
        PID,
        OWNER.address,
        "BTCUSDT",
        is_long,
        size,
        entry_usd * USD,
        orders.get("take_profit", TriggerOrder(0, 0)),
        orders.get("stop_loss", TriggerOrder(0, 0)),
    )


def state(
    pos: Position | None = None,
    *,
    price_usd: int = 97_000,
    updated_at: int = 1_000,
    now: int = 1_100,
    max_age: int = 3_600,
    error: Any = None,
    fees: Fees = DEFAULT_FEES,
) -> CloseState:
    return CloseState(
        chain_id=31337,
        quote=PositionQuote(pos or position(), price_usd * USD, updated_at),
        head=ChainHead(number=7, timestamp=now, base_fee_wei=1_000_000_000),
        max_price_age_s=max_age,
        fees=fees,
        nonce=4,
        gas_estimate=50_000,
        simulation_error=error,
    )


def request(**fields: Any) -> CloseRequest:
    return parse_close_request({"positionId": "0x" + PID.hex(), **fields})


# --- calldata -----------------------------------------------------------------------------------------------


def test_a_full_close_uses_the_close_all_sentinel() -> None:
    name, args = calldata.decode_call(encode_request(request(allowedPrice="95000")))
    assert name == "closePosition"
    assert args == {"positionId": PID, "sizeDelta": CLOSE_ALL_SIZE, "allowedPrice": 95_000 * USD}


def test_a_single_trigger_is_a_direct_call() -> None:
    name, args = calldata.decode_call(encode_request(request(stopLoss="90000", stopLossClosePercent=2500)))
    assert (name, args["price"], args["closeBps"]) == ("setStopLoss", 90_000 * USD, 2500)


def test_close_and_orders_go_in_one_multicall_close_first() -> None:
    data = encode_request(
        request(sizeDelta="0.5", takeProfit="99000", takeProfitClosePercent=5000, stopLoss=0)
    )
    name, args = calldata.decode_call(data)
    assert name == "multicall"
    inner = [calldata.decode_call(bytes(call)) for call in args["data"]]
    assert [n for n, _ in inner] == ["closePosition", "setTakeProfit", "setStopLoss"]
    assert inner[0][1]["sizeDelta"] == ONE // 2
    assert inner[2][1]["price"] == 0  # cancels


# --- checks against the chain state -------------------------------------------------------------------------


def test_preview_of_a_partial_close_of_a_long_in_profit() -> None:
    preview = check_request(request(sizeDelta="0.25"), state(price_usd=97_000))
    assert (preview.size_delta, preview.size_after) == (ONE // 4, 3 * ONE // 4)
    assert preview.realized_pnl_e8 == 250 * USD
    assert preview.remaining_unrealized_pnl_e8 == 750 * USD
    assert preview.to_dict()["realizedPnl"] == "250"
    assert preview.to_dict()["sizeAfter"] == "0.75"


def test_preview_rounds_losses_away_from_zero_like_the_vault() -> None:
    pos = position(is_long=False, size=3)  # three wei of size: every PnL is a fraction of a unit
    preview = check_request(request(sizeDelta="0.000000000000000001"), state(pos, price_usd=96_001))
    assert preview.realized_pnl_e8 == -1
    assert preview.remaining_unrealized_pnl_e8 == -1


def test_a_full_close_clears_both_orders_in_the_preview() -> None:
    pos = position(take_profit=TriggerOrder(99_000 * USD, 5000), stop_loss=TriggerOrder(90_000 * USD, 10_000))
    preview = check_request(request(), state(pos))
    assert preview.size_after == 0
    assert preview.to_dict()["takeProfit"] is None
    assert preview.to_dict()["stopLoss"] is None


def test_setting_orders_closes_nothing_and_keeps_the_other_order() -> None:
    pos = position(stop_loss=TriggerOrder(90_000 * USD, 10_000))
    preview = check_request(request(takeProfit="99000", takeProfitClosePercent=5000), state(pos))
    assert preview.size_delta == 0
    assert preview.realized_pnl_e8 == 0
    assert preview.take_profit == TriggerOrder(99_000 * USD, 5000)
    assert preview.stop_loss == TriggerOrder(90_000 * USD, 10_000)


def test_position_never_opened() -> None:
    missing = replace(position(), owner="0x0000000000000000000000000000000000000000", size=0)
    with pytest.raises(PositionNotFoundError):
        check_request(request(), state(missing))


def test_position_already_closed() -> None:
    with pytest.raises(PositionNotFoundError) as info:
        check_request(request(), state(position(size=0)))
    assert info.value.details["status"] == "closed"


def test_stale_price_is_caught_before_the_simulation() -> None:
    fresh_until = 1_000 + 3_600
    check_request(request(), state(now=fresh_until))
    with pytest.raises(StalePriceError) as info:
        check_request(request(), state(now=fresh_until + 1, error=error_from_revert(b"")))
    assert info.value.http_status == 409


def test_market_without_a_price() -> None:
    with pytest.raises(PriceNotSetError):
        check_request(request(), state(updated_at=0, price_usd=0))


def test_size_delta_larger_than_the_position() -> None:
    with pytest.raises(SizeDeltaExceedsPositionError) as info:
        check_request(request(sizeDelta="1.000000000000000001"), state())
    assert info.value.details == {"sizeDelta": "1.000000000000000001", "size": "1"}
    check_request(request(sizeDelta="1"), state())  # exactly the size is a full close


def test_full_close_with_orders_is_refused() -> None:
    with pytest.raises(InvalidFieldError) as info:
        check_request(request(sizeDelta="1", stopLoss="90000", stopLossClosePercent=1), state())
    assert info.value.details["field"] == "sizeDelta"


@pytest.mark.parametrize(
    ("is_long", "allowed", "ok"),
    [
        (True, "97000", True),
        (True, "97000.00000001", False),
        (False, "97000", True),
        (False, "96999.99999999", False),
    ],
)
def test_allowed_price_is_the_worst_acceptable_exit(is_long: bool, allowed: str, ok: bool) -> None:
    current = state(position(is_long=is_long), price_usd=97_000)
    if ok:
        check_request(request(allowedPrice=allowed), current)
        return
    with pytest.raises(PriceSlippageError) as info:
        check_request(request(allowedPrice=allowed), current)
    assert info.value.details == {"price": "97000", "allowedPrice": allowed}
    assert info.value.retryable


@pytest.mark.parametrize(
    ("is_long", "field", "price", "ok"),
    [
        (True, "takeProfit", "97000.00000001", True),
        (True, "takeProfit", "97000", False),
        (True, "stopLoss", "96999", True),
        (True, "stopLoss", "97001", False),
        (False, "takeProfit", "96999", True),
        (False, "takeProfit", "97001", False),
        (False, "stopLoss", "97001", True),
        (False, "stopLoss", "97000", False),
    ],
)
def test_triggers_must_be_on_the_right_side(is_long: bool, field: str, price: str, ok: bool) -> None:
    body = {field: price, f"{field}ClosePercent": 5000}
    current = state(position(is_long=is_long), price_usd=97_000)
    if ok:
        check_request(request(**body), current)
        return
    with pytest.raises(InvalidTriggerPriceError) as info:
        check_request(request(**body), current)
    assert info.value.details["field"] == field


def test_a_cancel_is_valid_on_either_side() -> None:
    check_request(request(takeProfit=0, stopLoss=0), state())


def test_precise_errors_win_over_the_simulations_generic_revert() -> None:
    reverted = ExecutionRevertedError("the vault reverted")
    with pytest.raises(SizeDeltaExceedsPositionError):
        check_request(request(sizeDelta="2"), state(error=reverted))
    with pytest.raises(ExecutionRevertedError):
        check_request(request(sizeDelta="0.5"), state(error=reverted))


def test_a_revert_no_check_foresaw_is_raised_decoded() -> None:
    with pytest.raises(NotAuthorizedError):
        check_request(request(), state(error=NotAuthorizedError("no", caller=VAULT)))


# --- the transaction ----------------------------------------------------------------------------------------


def built(fees: Fees) -> BuiltTransaction[ClosePreview]:
    req = request(sizeDelta="0.5")
    return assemble(req, encode_request(req), state(fees=fees), VAULT.lower(), gas_limit_margin_bps=2_000)


def test_eip1559_transaction_signs_as_is_and_prices_the_worst_case() -> None:
    tx = built(Fees(2_875_000_001, 1_000_000_000))
    assert tx.action is CloseAction.DECREASE
    assert tx.gas_limit == 60_000
    assert tx.transaction == {
        "type": "0x2",
        "chainId": hex(31337),
        "from": OWNER.address,
        "to": VAULT,
        "data": "0x" + tx.calldata.hex(),
        "value": "0x0",
        "gas": hex(60_000),
        "nonce": "0x4",
        "maxFeePerGas": hex(2_875_000_001),
        "maxPriorityFeePerGas": hex(1_000_000_000),
    }
    assert tx.to_dict()["requiredGasFee"] == "0.00017250000006"
    signed = OWNER.sign_transaction(tx.transaction)
    assert Account.recover_transaction(signed.raw_transaction) == OWNER.address
    assert signed.raw_transaction == OWNER.sign_transaction(int_fields(tx.transaction)).raw_transaction
    assert tx.to_dict()["serializedTransaction"] == "0x" + tx.serialized_transaction.hex()
    assert tx.serialized_transaction.startswith(b"\x02")


def test_legacy_transaction_on_chains_without_a_base_fee() -> None:
    tx = built(Fees(0, 0, gas_price_wei=7))
    assert "type" not in tx.transaction
    assert tx.transaction["gasPrice"] == "0x7"
    assert tx.to_dict()["requiredGasFee"] == format_fixed(60_000 * 7, 18)
    signed = OWNER.sign_transaction(tx.transaction)
    assert signed.raw_transaction == OWNER.sign_transaction(int_fields(tx.transaction)).raw_transaction
    assert tx.serialized_transaction[0] >= 0xC0  # an RLP list: a legacy transaction has no type byte


def int_fields(transaction: dict[str, str]) -> dict[str, Any]:
    """The dict with its hex quantities as ints: eth-account must sign both forms identically."""
    return {k: v if k in {"from", "to", "data"} else int(v, 16) for k, v in transaction.items()}


# --- return data decoding -----------------------------------------------------------------------------------

uint = st.integers(min_value=0, max_value=UINT256_MAX)
uint112 = st.integers(min_value=0, max_value=2**112 - 1)
uint16 = st.integers(min_value=0, max_value=2**16 - 1)


@given(
    owner=st.binary(min_size=20, max_size=20),
    market=st.binary(min_size=32, max_size=32),
    is_long=st.booleans(),
    size=uint,
    entry=uint,
    tp=st.tuples(uint112, uint16),
    sl=st.tuples(uint112, uint16),
    price=uint,
    updated_at=uint,
)
def test_word_decoder_matches_eth_abi(
    owner: bytes,
    market: bytes,
    is_long: bool,
    size: int,
    entry: int,
    tp: tuple[int, int],
    sl: tuple[int, int],
    price: int,
    updated_at: int,
) -> None:
    view = "(address,bytes32,bool,uint256,uint256,(uint112,uint16),(uint112,uint16))"
    data = encode(
        [view, "uint256", "uint256"], [(owner, market, is_long, size, entry, tp, sl), price, updated_at]
    )
    quote = decode_position_with_price(PID, data)
    p = quote.position
    assert p.owner.lower() == "0x" + owner.hex()
    assert (p.is_long, p.size, p.entry_price_e8) == (is_long, size, entry)
    assert (p.take_profit, p.stop_loss) == (TriggerOrder(*tp), TriggerOrder(*sl))
    assert (quote.price_e8, quote.price_updated_at) == (price, updated_at)


def test_empty_or_short_return_data_is_an_error_not_a_crash() -> None:
    with pytest.raises(Exception, match="no contract"):
        decode_position_with_price(PID, b"")
    with pytest.raises(ExecutionRevertedError):
        decode_position_with_price(PID, b"\x00" * 64)


def test_trigger_update_is_carried_through() -> None:
    assert request(takeProfit="1", takeProfitClosePercent=1).take_profit == TriggerOrder(USD, 1)
