"""The examples in the core modules' docstrings run as part of the normal suite, so they cannot go stale."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from relayer.domain import exits, fees, jsonio, markets, positions, units
from relayer.domain import requests as close_request


@pytest.mark.parametrize(
    "module", [units, fees, positions, markets, exits, jsonio, close_request], ids=lambda m: m.__name__
)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{module.__name__} has no doctests"
    assert result.failed == 0
