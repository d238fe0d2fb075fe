"""Revert data in, `RelayerError` out: real reverts from both backends, and every custom error of the ABI."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.exceptions import ContractCustomError

from relayer import errors as e
from relayer.chain.artifact import load_artifact
from relayer.chain.connect import Chain, rpc_chain
from relayer.chain.revert import decode_revert, error_from_revert, revert_data, translate
from relayer.chain.vault import VaultReader, call_chain
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32

ABI_ERRORS = {item["name"]: item for item in load_artifact().abi if item["type"] == "error"}
POSITION_ID = bytes(range(32))
OWNER = "0x" + "ab" * 20
BTC = symbol_to_bytes32("BTCUSDT")

# name -> (arguments in ABI order, expected class, expected details besides "revert")
CASES: dict[str, tuple[list[Any], type[e.RelayerError], dict[str, Any]]] = {
    "NotAuthorized": ([OWNER], e.NotAuthorizedError, {"caller": to_checksum_address(OWNER)}),
    "PositionNotFound": ([POSITION_ID], e.PositionNotFoundError, {"positionId": "0x" + POSITION_ID.hex()}),
    "InvalidSize": ([0], e.InvalidSizeError, {"size": "0"}),
    "SizeDeltaTooLarge": (
        [2 * 10**18, 10**18],
        e.SizeDeltaExceedsPositionError,
        {
            "sizeDelta": str(2 * 10**18),
            "size": str(10**18),
        },
    ),
    "PriceSlippage": (
        [9_600_000_000_000, 9_700_000_000_000],
        e.PriceSlippageError,
        {
            "price": "96000",
            "allowedPrice": "97000",
        },
    ),
    "PriceNotSet": ([BTC], e.PriceNotSetError, {"market": "BTCUSDT"}),
    "StalePrice": (
        [BTC, 1_700_000_000, 3_600],
        e.StalePriceError,
        {
            "market": "BTCUSDT",
            "updatedAt": 1_700_000_000,
            "maxPriceAge": 3_600,
        },
    ),
    "InvalidPrice": ([2**112], e.InvalidPriceError, {"price": str(2**112)}),
    "InvalidTriggerPrice": (
        [True, 9_500_000_000_000, 9_600_012_345_678],
        e.InvalidTriggerPriceError,
        {
            "isTakeProfit": True,
            "triggerPrice": "95000",
            "currentPrice": "96000.12345678",
        },
    ),
    "InvalidCloseBps": ([10_001], e.InvalidCloseBpsError, {"closeBps": 10_001}),
    "TriggerNotCrossed": (
        [POSITION_ID, 1],
        e.TriggerNotCrossedError,
        {
            "positionId": "0x" + POSITION_ID.hex(),
            "currentPrice": "0.00000001",
        },
    ),
    "ExpiredRequest": ([100, 101], e.ExpiredRequestError, {"deadline": 100, "timestamp": 101}),
    "InvalidNonce": (
        [OWNER, 3, 2],
        e.InvalidNonceError,
        {
            "owner": to_checksum_address(OWNER),
            "expected": 3,
            "got": 2,
        },
    ),
    "InvalidSignature": ([], e.InvalidSignatureError, {}),
    "InvalidMaxPriceAge": ([0], e.InvalidFieldError, {"field": "maxPriceAge"}),
    "OrderIdInvalid": ([6], e.InvalidOrderIdError, {"orderId": 6}),
    "OrderNotFound": (
        [POSITION_ID, 2],
        e.OrderNotFoundError,
        {"positionId": "0x" + POSITION_ID.hex(), "orderId": 2},
    ),
    "OrderNotNext": (
        [POSITION_ID, 1, 4],
        e.OrderNotNextError,
        {"positionId": "0x" + POSITION_ID.hex(), "orderId": 1, "nextOrderId": 4},
    ),
    "OrderOutOfSequence": (
        [1, 9_700_000_000_000, 0, 9_800_000_000_000],
        e.OrderOutOfSequenceError,
        {"orderId": 1, "price": "97000", "otherOrderId": 0, "otherPrice": "98000"},
    ),
    "OrderTrailInvalid": ([0, 50], e.InvalidTrailBpsError, {"orderId": 0, "trailBps": 50}),
    "PlanSharesExceeded": (
        [12_500, 10_000],
        e.PlanSharesExceededError,
        {"sharesBps": 12_500, "remainingBps": 10_000},
    ),
    "PlanOrderDuplicated": ([3], e.PlanOrderDuplicatedError, {"orderId": 3}),
    "StopNotTrailing": (
        [POSITION_ID, 4],
        e.StopNotTrailingError,
        {"positionId": "0x" + POSITION_ID.hex(), "orderId": 4},
    ),
    "StopRatchetAgainstTrader": (
        [POSITION_ID, 5, 9_500_000_000_000, 9_400_000_000_000],
        e.StopRatchetAgainstTraderError,
        {
            "positionId": "0x" + POSITION_ID.hex(),
            "orderId": 5,
            "trigger": "95000",
            "proposedTrigger": "94000",
        },
    ),
    "OperatorRightMissing": (
        [OWNER, 8],
        e.OperatorRightMissingError,
        {"operator": to_checksum_address(OWNER), "right": 8, "rightName": "loosen_or_cancel_stop"},
    ),
    "OperatorExpired": (
        [OWNER, 1_700_000_000],
        e.OperatorExpiredError,
        {"operator": to_checksum_address(OWNER), "expiresAt": 1_700_000_000},
    ),
    "OperatorRightsInvalid": ([16], e.InvalidOperatorRightsError, {"rights": 16}),
}


def _types(name: str) -> list[str]:
    return [i["type"] for i in ABI_ERRORS[name]["inputs"]]


def _revert_bytes(name: str, args: list[Any]) -> bytes:
    types = _types(name)
    return keccak(text=f"{name}({','.join(types)})")[:4] + encode(types, args)


def test_every_abi_error_has_a_case() -> None:
    assert set(CASES) == set(ABI_ERRORS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_from_revert_maps_every_custom_error(name: str) -> None:
    args, expected_type, details = CASES[name]
    error = error_from_revert(_revert_bytes(name, args))
    assert type(error) is expected_type
    assert error.code == expected_type.code
    assert error.details == {**details, "revert": name}
    assert error.message
    decoded = decode_revert(_revert_bytes(name, args))
    assert decoded is not None
    assert decoded.name == name
    assert list(decoded.args) == [i["name"] for i in ABI_ERRORS[name]["inputs"]]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00",
        b"\xde\xad\xbe\xef",
        keccak(text="Error(string)")[:4] + encode(["string"], ["a require message"]),
        keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [0x11]),
    ],
)
def test_unknown_revert_data_is_execution_reverted(data: bytes) -> None:
    error = error_from_revert(data)
    assert type(error) is e.ExecutionRevertedError
    assert error.details == {"data": "0x" + data.hex()}
    assert decode_revert(data) is None


@pytest.mark.parametrize(
    "data",
    [
        _revert_bytes("PositionNotFound", [POSITION_ID])[:-1],  # truncated
        _revert_bytes("SizeDeltaTooLarge", [1, 2])[: 4 + 32],  # one argument missing
        _revert_bytes("InvalidTriggerPrice", [True, 1, 2])[:4]
        + (2).to_bytes(32, "big")
        + b"\0" * 64,  # bool 2
        _revert_bytes("NotAuthorized", [OWNER])[:4] + b"\xff" * 32,  # dirty address padding
    ],
)
def test_malformed_arguments_are_execution_reverted(data: bytes) -> None:
    error = error_from_revert(data)
    assert type(error) is e.ExecutionRevertedError
    assert error.details["data"] == "0x" + data.hex()


# --- revert data carried by exceptions ----------------------------------------------------------------------


def test_revert_data_from_a_real_revert(
    chain: Chain, vault: VaultReader, accounts: list[LocalAccount]
) -> None:
    unknown = b"\x42" * 32
    with pytest.raises((TransactionFailed, ContractCustomError)) as info:
        vault.contract.functions.closePosition(unknown, 1, 0).call({"from": accounts[1].address})
    expected_type = TransactionFailed if chain.is_embedded else ContractCustomError
    assert type(info.value) is expected_type
    assert revert_data(info.value) == _revert_bytes("PositionNotFound", [unknown])
    translated = translate(info.value)
    assert type(translated) is e.PositionNotFoundError
    assert translated.details["positionId"] == "0x" + unknown.hex()


def test_call_chain_raises_the_decoded_error(
    chain: Chain,
    vault: VaultReader,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
) -> None:
    position_id = open_position(size="1")
    stranger = accounts[2]
    with pytest.raises(e.NotAuthorizedError) as info:
        call_chain(
            lambda: chain.w3.eth.estimate_gas(
                {
                    "from": stranger.address,
                    "to": vault.address,
                    "data": calldata.close_position(position_id, 10**17, 0),
                }
            )
        )
    assert info.value.details == {"caller": stranger.address, "revert": "NotAuthorized"}
    assert info.value.__cause__ is not None
    with pytest.raises(e.SizeDeltaExceedsPositionError) as too_much:
        call_chain(
            lambda: vault.contract.functions.closePosition(position_id, 2 * 10**18, 0).call(
                {"from": accounts[1].address}
            )
        )
    assert too_much.value.details["size"] == str(10**18)


def test_revert_data_shapes() -> None:
    class DataError(Exception):
        def __init__(self, data: object) -> None:
            super().__init__("reverted")
            self.data = data

    assert revert_data(DataError("0x1234")) == b"\x12\x34"
    assert revert_data(DataError({"data": "0xabcd", "message": "execution reverted"})) == b"\xab\xcd"
    assert revert_data(DataError("0x123")) is None  # half a byte is not revert data
    assert revert_data(DataError("not hex")) is None
    assert revert_data(TransactionFailed("execution reverted: b'\\x01\\x02'")) == b"\x01\x02"
    assert revert_data(TransactionFailed("b'\\x01\\x02'")) == b"\x01\x02"  # eth-tester called directly
    assert revert_data(TransactionFailed("execution reverted")) == b""
    assert revert_data(TransactionFailed("execution reverted: b'x' or 'y'")) == b""
    assert revert_data(TransactionFailed("out of gas")) is None
    assert revert_data(ValueError("0x1234")) is None


# --- translate ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc", [ConnectionError("refused"), ConnectionRefusedError(), TimeoutError(), OSError("network down")]
)
def test_translate_connection_failures(exc: BaseException) -> None:
    translated = translate(exc)
    assert type(translated) is e.ChainUnavailableError
    assert translated.retryable
    assert translated.http_status == 503


def test_translate_a_real_unreachable_node() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chain = rpc_chain(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(e.ChainUnavailableError, match="did not answer"):
        call_chain(lambda: chain.w3.eth.chain_id)


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyError("x"), RuntimeError(), ZeroDivisionError()])
def test_translate_leaves_bugs_alone(exc: BaseException) -> None:
    assert translate(exc) is None


def test_translate_passes_relayer_errors_through() -> None:
    error = e.StalePriceError("stale")
    assert translate(error) is error


def test_translate_an_empty_revert() -> None:
    translated = translate(TransactionFailed("execution reverted"))
    assert type(translated) is e.ExecutionRevertedError
    assert translated.details == {"data": "0x"}
