"""The error tree: every error a client can meet has a stable code and an HTTP status."""

from __future__ import annotations

import relayer.errors as errors_module
from relayer.errors import InvalidFieldError, RelayerError


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
