"""Vault calldata: every encoder decodes back to the same function and arguments."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from relayer.chain.artifact import load_artifact
from relayer.constants import CLOSE_ALL_SIZE, UINT256_MAX
from relayer.domain import calldata

bytes32 = st.binary(min_size=32, max_size=32)
uint256 = st.integers(min_value=0, max_value=UINT256_MAX)
uint16 = st.integers(min_value=0, max_value=2**16 - 1)
VAULT_FUNCTIONS = {item["name"] for item in load_artifact().abi if item["type"] == "function"}
addresses = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


@given(position_id=bytes32, size_delta=uint256, allowed=uint256)
def test_close_position_round_trip(position_id: bytes, size_delta: int, allowed: int) -> None:
    data = calldata.close_position(position_id, size_delta, allowed)
    assert data[:4] == _selector("closePosition(bytes32,uint256,uint256)")
    assert len(data) == 4 + 3 * 32
    assert calldata.decode_call(data) == (
        "closePosition",
        {"positionId": position_id, "sizeDelta": size_delta, "allowedPrice": allowed},
    )


def test_close_all_uses_the_sentinel() -> None:
    data = calldata.close_position(b"\x07" * 32, CLOSE_ALL_SIZE, 0)
    assert data[36:68] == b"\xff" * 32


@pytest.mark.parametrize(
    ("encoder", "name", "signature"),
    [
        (calldata.set_take_profit, "setTakeProfit", "setTakeProfit(bytes32,uint256,uint16)"),
        (calldata.set_stop_loss, "setStopLoss", "setStopLoss(bytes32,uint256,uint16)"),
    ],
)
@given(position_id=bytes32, price=uint256, close_bps=uint16)
def test_trigger_setters_round_trip(
    encoder: Any, name: str, signature: str, position_id: bytes, price: int, close_bps: int
) -> None:
    data = encoder(position_id, price, close_bps)
    assert data[:4] == _selector(signature)
    assert calldata.decode_call(data) == (
        name,
        {"positionId": position_id, "price": price, "closeBps": close_bps},
    )


@given(position_id=bytes32)
def test_execute_trigger_round_trip(position_id: bytes) -> None:
    data = calldata.execute_trigger(position_id)
    assert data == _selector("executeTrigger(bytes32)") + position_id
    assert calldata.decode_call(data) == ("executeTrigger", {"positionId": position_id})


@given(operator=addresses, approved=st.booleans())
def test_set_operator_round_trip_checksums_the_address(operator: str, approved: bool) -> None:
    data = calldata.set_operator(operator, approved)
    assert data[:4] == _selector("setOperator(address,bool)")
    assert calldata.decode_call(data) == (
        "setOperator",
        {"operator": to_checksum_address(operator), "approved": approved},
    )
    assert calldata.set_operator(operator.upper().replace("0X", "0x"), approved) == data


@given(calls=st.lists(st.binary(max_size=200), max_size=5))
def test_multicall_round_trip(calls: list[bytes]) -> None:
    data = calldata.multicall(calls)
    assert data[:4] == _selector("multicall(bytes[])")
    name, args = calldata.decode_call(data)
    assert name == "multicall"
    assert [bytes(call) for call in args["data"]] == calls


def test_multicall_of_real_calls_decodes_each_inner_call() -> None:
    inner = [
        calldata.close_position(b"\x01" * 32, 10**17, 0),
        calldata.set_take_profit(b"\x01" * 32, 100 * 10**8, 5_000),
    ]
    _, args = calldata.decode_call(calldata.multicall(inner))
    assert [calldata.decode_call(bytes(call))[0] for call in args["data"]] == [
        "closePosition",
        "setTakeProfit",
    ]


@given(market=bytes32, is_long=st.booleans(), size=uint256, allowed=uint256)
def test_encode_call_round_trip(market: bytes, is_long: bool, size: int, allowed: int) -> None:
    data = calldata.encode_call("openPosition", market, is_long, size, allowed)
    assert data[:4] == _selector("openPosition(bytes32,bool,uint256,uint256)")
    assert calldata.decode_call(data) == (
        "openPosition",
        {"market": market, "isLong": is_long, "size": size, "allowedPrice": allowed},
    )


@given(
    position_id=bytes32,
    size=uint256,
    allowed=uint256,
    nonce=uint256,
    deadline=uint256,
    sig=st.binary(max_size=65),
)
def test_close_position_with_sig_round_trip(
    position_id: bytes, size: int, allowed: int, nonce: int, deadline: int, sig: bytes
) -> None:
    data = calldata.close_position_with_sig(position_id, size, allowed, nonce, deadline, sig)
    assert data[:4] == _selector("closePositionWithSig((bytes32,uint256,uint256,uint256,uint256),bytes)")
    name, args = calldata.decode_call(data)
    assert name == "closePositionWithSig"
    assert dict(args["request"]) == {
        "positionId": position_id,
        "sizeDelta": size,
        "allowedPrice": allowed,
        "nonce": nonce,
        "deadline": deadline,
    }
    assert bytes(args["signature"]) == sig


@given(
    position_id=bytes32,
    is_tp=st.booleans(),
    price=uint256,
    close_bps=uint16,
    nonce=uint256,
    deadline=uint256,
    sig=st.binary(max_size=65),
)
def test_set_trigger_with_sig_round_trip(
    position_id: bytes, is_tp: bool, price: int, close_bps: int, nonce: int, deadline: int, sig: bytes
) -> None:
    data = calldata.set_trigger_with_sig(position_id, is_tp, price, close_bps, nonce, deadline, sig)
    assert data[:4] == _selector("setTriggerWithSig((bytes32,bool,uint256,uint16,uint256,uint256),bytes)")
    name, args = calldata.decode_call(data)
    assert name == "setTriggerWithSig"
    assert dict(args["request"]) == {
        "positionId": position_id,
        "isTakeProfit": is_tp,
        "price": price,
        "closeBps": close_bps,
        "nonce": nonce,
        "deadline": deadline,
    }
    assert bytes(args["signature"]) == sig


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"\xde\xad\xbe\xef",
        b"\xde\xad\xbe\xef" + b"\x00" * 64,
        _selector("closePosition(bytes32,uint256,uint256)"),  # a vault selector with no arguments
        _selector("closePosition(bytes32,uint256,uint256)") + b"\x01" * 40,  # truncated arguments
        _selector("setOperator(address,bool)") + b"\xff" * 64,  # dirty address padding, bool out of range
    ],
)
def test_decode_garbage_raises_value_error(garbage: bytes) -> None:
    with pytest.raises(ValueError, match=r"selector|malformed"):
        calldata.decode_call(garbage)


@given(st.binary(max_size=300))
def test_decode_random_bytes_raises_only_value_error(data: bytes) -> None:
    try:
        name, _ = calldata.decode_call(data)
    except ValueError:
        return
    assert name in VAULT_FUNCTIONS


@given(
    selector=st.sampled_from(["closePosition", "setOperator", "multicall", "setTakeProfit"]), tail=st.binary()
)
def test_decode_vault_selector_with_random_arguments_raises_value_error(selector: str, tail: bytes) -> None:
    head = calldata.encode_call(selector, *_defaults(selector))[:4]
    try:
        name, _ = calldata.decode_call(head + tail)
    except ValueError:
        return
    assert name == selector


def _defaults(name: str) -> tuple[Any, ...]:
    return {
        "closePosition": (b"\0" * 32, 0, 0),
        "setOperator": ("0x" + "00" * 20, False),
        "multicall": ([],),
        "setTakeProfit": (b"\0" * 32, 0, 0),
    }.get(name, ())


@given(
    position_id=st.binary(max_size=40),
    size_delta=st.integers(min_value=-(2**8), max_value=2**257),
    allowed=uint256 | st.booleans(),
)
def test_word_arguments_encode_as_eth_abi_does_and_the_rest_is_refused_by_it(
    position_id: bytes, size_delta: int, allowed: int
) -> None:
    # encode_call writes all-word arguments itself; anything else (short bytes, out of range, bool) is
    # eth-abi's, so the bytes and the refusals must be the same as eth-abi's alone.
    types = ["bytes32", "uint256", "uint256"]
    try:
        expected: bytes | type[Exception] = encode(types, [position_id, size_delta, allowed])
    except Exception as error:
        expected = type(error)
    if isinstance(expected, bytes):
        assert (
            calldata.close_position(position_id, size_delta, allowed)
            == _selector("closePosition(bytes32,uint256,uint256)") + expected
        )
    else:
        with pytest.raises(expected):
            calldata.close_position(position_id, size_delta, allowed)


uint8 = st.integers(min_value=0, max_value=2**8 - 1)
exit_orders = st.lists(st.tuples(uint8, uint256, uint16, uint16), max_size=6)


@given(position_id=bytes32, order_id=uint8, price=uint256, share=uint16, trail=uint16)
def test_order_calls_round_trip(
    position_id: bytes, order_id: int, price: int, share: int, trail: int
) -> None:
    data = calldata.set_order(position_id, order_id, price, share, trail)
    assert data[:4] == _selector("setOrder(bytes32,uint8,uint256,uint16,uint16)")
    assert calldata.decode_call(data) == (
        "setOrder",
        {
            "positionId": position_id,
            "orderId": order_id,
            "price": price,
            "shareBps": share,
            "trailBps": trail,
        },
    )
    for function, encode_order_call in (
        ("cancelOrder", calldata.cancel_order),
        ("ratchetStop", calldata.ratchet_stop),
        ("executeOrder", calldata.execute_order),
    ):
        encoded = encode_order_call(position_id, order_id)
        assert encoded[:4] == _selector(f"{function}(bytes32,uint8)")
        assert calldata.decode_call(encoded) == (function, {"positionId": position_id, "orderId": order_id})


@given(position_id=bytes32, orders=exit_orders, nonce=uint256, deadline=uint256)
def test_exit_plan_calls_round_trip(
    position_id: bytes, orders: list[tuple[int, int, int, int]], nonce: int, deadline: int
) -> None:
    as_dicts = [{"orderId": o, "price": p, "shareBps": s, "trailBps": t} for o, p, s, t in orders]
    data = calldata.set_exit_plan(position_id, orders)
    assert data[:4] == _selector("setExitPlan(bytes32,(uint8,uint256,uint16,uint16)[])")
    assert calldata.decode_call(data) == ("setExitPlan", {"positionId": position_id, "orders": as_dicts})
    signed = calldata.set_exit_plan_with_sig(position_id, orders, nonce, deadline, b"\x01" * 65)
    name, args = calldata.decode_call(signed)
    assert name == "setExitPlanWithSig"
    assert args["request"] == {
        "positionId": position_id,
        "orders": as_dicts,
        "nonce": nonce,
        "deadline": deadline,
    }


@given(owner=addresses, operator=addresses, rights=uint8, expires_at=st.integers(0, 2**64 - 1))
def test_operator_and_emergency_calls_checksum_and_round_trip(
    owner: str, operator: str, rights: int, expires_at: int
) -> None:
    assert calldata.decode_call(calldata.set_operator_rights(operator, rights, expires_at)) == (
        "setOperatorRights",
        {"operator": to_checksum_address(operator), "rights": rights, "expiresAt": expires_at},
    )
    every = calldata.decode_call(calldata.emergency_exit(owner))
    assert every == ("emergencyExit", {"owner": to_checksum_address(owner), "market": b"\0" * 32})
    _, one = calldata.decode_call(calldata.emergency_exit(owner, "BTCUSDT"))
    assert one["market"] == b"BTCUSDT".ljust(32, b"\0")
    _, signed = calldata.decode_call(
        calldata.set_operator_with_sig(owner, operator, rights, expires_at, 1, 2, b"\1" * 65)
    )
    assert signed["request"]["owner"] == to_checksum_address(owner)
    assert signed["request"]["rights"] == rights
