"""Vault calls are encoded in one place, `relayer.domain.calldata`: no module writes `openPosition` or
`setPrice` calldata by hand beside it."""

from __future__ import annotations

import re

from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from tests.conftest import ROOT


def test_open_position_and_set_price_encode_what_the_vault_decodes() -> None:
    opened = calldata.decode_call(calldata.open_position("btcusdt", False, 5 * 10**17, 9_504_000_000_000))
    priced = calldata.decode_call(calldata.set_price("ETHUSDT", 342_050_000_000))

    assert opened == (
        "openPosition",
        {
            "market": symbol_to_bytes32("BTCUSDT"),
            "isLong": False,
            "size": 5 * 10**17,
            "allowedPrice": 9_504_000_000_000,
        },
    )
    assert priced == ("setPrice", {"market": symbol_to_bytes32("ETHUSDT"), "price": 342_050_000_000})


def test_no_module_encodes_these_calls_by_hand() -> None:
    by_hand = re.compile(r"""encode_call\(\s*["'](openPosition|setPrice)["']""")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "relayer").rglob("*.py")
        if path.name != "calldata.py" and by_hand.search(path.read_text())
    ]
    assert offenders == []
