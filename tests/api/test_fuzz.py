"""Random JSON bodies never make POST /api/closeposition answer 5xx: bad input is always a 4xx with a code.

Runs on eth-tester only (py-evm in-process keeps ~150 examples fast); the chain-facing paths are the same code
on anvil, which the other API tests cover.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from relayer.close_request import FIELDS

pytestmark = pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)


class Raw(str):
    """Text spliced into the body as is: NaN, Infinity and other tokens `json.dumps` would never write."""


def to_json(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, Decimal)):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in text) + '"'


numbers = st.one_of(
    st.integers(min_value=-(2**300), max_value=2**300),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            Decimal("1e-30"),
            Decimal("1E+400"),
            Decimal("115792089237316195423570985008687907853269984665640564039457.584007913129639935"),
        ]
    ),
)
numeric_text = numbers.map(str) | st.sampled_from(["NaN", "inf", "-0", "1e", "0x10", " 1 ", "1_000", "١٢"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    numeric_text,
    st.text(max_size=20),
    st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity")]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


PLAUSIBLE = st.one_of(
    st.integers(min_value=0, max_value=20_000),
    st.decimals(min_value=0, max_value=200_000, places=8).map(str),
    st.sampled_from(["0.5", "1", "96000", "95000", "97000", "0"]),
)
"""Values in the range real requests use, so many examples get past parsing into the chain checks."""


@pytest.fixture
def real_position(open_position: Callable[..., bytes]) -> str:
    return "0x" + open_position(size="1").hex()


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data())
def test_random_bodies_never_answer_5xx(client: TestClient, real_position: str, data: st.DataObject) -> None:
    position_ids = st.sampled_from(
        [real_position, "0x" + "00" * 32, real_position.upper().replace("0X", "0x")]
    )
    keys = st.sampled_from(FIELDS) | st.text(max_size=10)
    plausible = st.fixed_dictionaries(
        {"positionId": position_ids},
        optional={field: PLAUSIBLE | values for field in FIELDS if field != "positionId"},
    )
    prices = st.decimals(min_value=80_000, max_value=120_000, places=8)
    bps = st.integers(min_value=0, max_value=10_001)
    shaped = st.builds(
        lambda pid, base, tp, sl: {"positionId": pid, **base, **tp, **sl},
        position_ids,
        st.fixed_dictionaries(
            {},
            optional={"sizeDelta": st.decimals(min_value=0, max_value=2, places=18), "allowedPrice": prices},
        ),
        st.just({}) | st.fixed_dictionaries({"takeProfit": prices, "takeProfitClosePercent": bps}),
        st.just({}) | st.fixed_dictionaries({"stopLoss": prices, "stopLossClosePercent": bps}),
    )
    body = data.draw(st.one_of(shaped, shaped, plausible, st.dictionaries(keys, values, max_size=7), values))
    truncated = data.draw(st.booleans())
    content = to_json(body)[:-1] if truncated else to_json(body)
    response = client.post(
        "/api/closeposition", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, (content, response.text)
    event(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] != "internal_error"
        assert isinstance(error["message"], str)
