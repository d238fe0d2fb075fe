"""The error tree: every error a client can meet has a stable code and an HTTP status."""

from __future__ import annotations

import relayer.errors as errors_module
from relayer.errors import (
    ExpiredRequestError,
    InvalidFieldError,
    InvalidNonceError,
    InvalidTriggerPriceError,
    PositionNotFoundError,
    PriceNotSetError,
    PriceSlippageError,
    RelayerError,
    StalePriceError,
)


def _all_subclasses(cls: type[RelayerError]) -> list[type[RelayerError]]:
    found: list[type[RelayerError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


SUBCLASSES = _all_subclasses(RelayerError)
EVERY_ERROR: list[type[RelayerError]] = [RelayerError, *SUBCLASSES]


def test_the_tree_is_not_empty() -> None:
    declared = {
        value
        for value in vars(errors_module).values()
        if isinstance(value, type) and issubclass(value, RelayerError) and value is not RelayerError
    }
    assert declared <= set(SUBCLASSES)
    assert len(declared) >= 20


def test_every_error_has_its_own_unique_code() -> None:
    codes = [cls.code for cls in EVERY_ERROR]
    for cls in SUBCLASSES:
        assert "code" in vars(cls), f"{cls.__name__} inherits its parent's code"
        assert cls.code, cls.__name__
        assert cls.code == cls.code.lower().replace("-", "_"), cls.code
    duplicates = sorted({code for code in codes if codes.count(code) > 1})
    assert not duplicates


def test_every_error_has_a_client_or_server_status() -> None:
    for cls in EVERY_ERROR:
        assert 400 <= cls.http_status <= 599, cls.__name__
        assert isinstance(cls.retryable, bool)


def test_wire_shape() -> None:
    error = InvalidFieldError("sizeDelta", "must be greater than zero", value="0")
    assert error.to_dict() == {
        "code": "invalid_field",
        "message": "sizeDelta: must be greater than zero",
        "details": {"field": "sizeDelta", "value": "0"},
    }
    assert str(error) == "sizeDelta: must be greater than zero"
    assert isinstance(error, ValueError)


def test_the_envelope_is_the_one_error_body() -> None:
    error = InvalidFieldError("sizeDelta", "must be greater than zero", value="0")
    assert error.envelope() == {"error": error.to_dict()}


def test_factories_build_their_own_class_with_its_details() -> None:
    pid = bytes(range(32))
    unknown, closed, not_open = (
        PositionNotFoundError.unknown(pid),
        PositionNotFoundError.closed(pid),
        PositionNotFoundError.not_open(pid),
    )
    assert {type(e) for e in (unknown, closed, not_open)} == {PositionNotFoundError}
    assert unknown.details == not_open.details == {"positionId": "0x" + pid.hex()}
    assert closed.details == {"positionId": "0x" + pid.hex(), "status": "closed"}
    assert PriceNotSetError.of_market("BTCUSDT").details == {"market": "BTCUSDT"}
    stale = StalePriceError.of_market("BTCUSDT", 1_000, 60, blockTimestamp=1_061)
    assert stale.details == {
        "market": "BTCUSDT",
        "updatedAt": 1_000,
        "maxPriceAge": 60,
        "blockTimestamp": 1_061,
    }
    assert ExpiredRequestError.past_deadline(100, 101).details == {"deadline": 100, "timestamp": 101}
    nonce = InvalidNonceError.not_next("0x" + "ab" * 20, 3, 2)
    assert nonce.details == {"owner": "0x" + "ab" * 20, "expected": 3, "got": 2}
    slippage = PriceSlippageError.worse_than_allowed("96000", "97000")
    assert (slippage.details, slippage.retryable) == ({"price": "96000", "allowedPrice": "97000"}, True)
    wrong = InvalidTriggerPriceError.wrong_side(False, "97000", "96000", is_long=True, field="stopLoss")
    assert wrong.message == "stop-loss 97000 must be below the current price 96000 for a long"
    assert wrong.details == {
        "isTakeProfit": False,
        "triggerPrice": "97000",
        "currentPrice": "96000",
        "field": "stopLoss",
    }


def test_every_error_class_restores_from_its_record() -> None:
    """A relay record keeps an error as `to_dict()`; `restore_error` rebuilds the class its code names, also
    for the `PermissionError` (an `OSError`) subclasses such as `operator_right_missing`."""
    for cls in errors_module._all_error_classes():
        saved = {"code": cls.code, "message": "why", "details": {"a": 1}}
        restored = errors_module.restore_error(saved)
        assert isinstance(restored, RelayerError)
        assert restored.to_dict() == saved
    restored = errors_module.restore_error({"code": "operator_right_missing", "message": "m", "details": {}})
    assert type(restored) is errors_module.OperatorRightMissingError
    assert restored.http_status == 403
