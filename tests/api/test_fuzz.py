"""Random input never makes the API answer 5xx: bad input is always a 4xx with a code.

Covered: `POST /api/closeposition` (random JSON bodies), the relay routes (`POST /api/relay/signed`,
`POST /api/relay/raw`, `GET /api/relay/typed-data` with random query parameters) and API-key trading
(`POST /api/partialclose`, `POST /api/trade/close` with a random, missing or real API key), the latter two on
an app with relayer signers. Runs on eth-tester only (py-evm in-process keeps ~100 examples per route fast);
the chain-facing paths are the same code on anvil, which the other API tests cover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.transact import build_transaction
from relayer.config import RelaySettings, Settings, TradingSettings
from relayer.constants import RELAYER_RIGHTS
from relayer.domain import calldata
from relayer.domain.requests import FIELDS
from relayer.domain.typed_data import parse_typed_data_query
from relayer.faces.api.app import create_app
from relayer.faces.cli import keys as keys_cli
from relayer.services.relay.signers import Signer
from tests.blocking import Blocking

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
    assert_answered_with_a_code(response, content)


def assert_answered_with_a_code(response: Any, sent: object) -> None:
    """Below 500; an error is `{"error": {"code", "message"}}` with a code other than `internal_error`."""
    assert response.status_code < 500, (sent, response.text)
    event(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] != "internal_error", (sent, error)
        assert isinstance(error["message"], str)


# --- relay and trading routes, on an app with relayer signers -----------------------------------------------


@dataclass
class RelayApp:
    client: TestClient
    position_id: str
    api_key: str
    raw_close: str
    """A valid signed raw `closePosition` of the position by its owner (mutated by the fuzz)."""
    signed_close: dict[str, Any]
    """A valid `POST /api/relay/signed` body: the owner's signed close of half the position (mutated too)."""


@pytest.fixture
def relay_app(
    chain: Chain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    tmp_path: Path,
) -> Iterator[RelayApp]:
    """The real app with relayer signers `accounts[5:7]`, approved as operators by the trader `accounts[1]`,
    who has an open position and a real API key; the keeper loop off, a quick relay."""
    trader = accounts[1]
    for signer in accounts[5:7]:
        transact(trader, calldata.set_operator_rights(signer.address, RELAYER_RIGHTS, 0))
    position_id = open_position(owner=trader, size="1")
    app_settings = Settings(
        vault_address=deployment.address,
        relay=RelaySettings(
            journal_path=tmp_path / "journal.sqlite3", poll_interval_s=0.02, retry_backoff_s=0.0
        ),
        trading=TradingSettings(receipt_timeout_s=2.0, poll_interval_s=0.02),
        keeper_interval_s=0,
        keeper_from_block=deployment.block_number,
    )
    app = create_app(app_settings, chain=chain, signers=[Signer(a) for a in accounts[5:7]])
    close = calldata.close_position(position_id, 10**17, 0)
    tx = build_transaction(chain.w3, trader.address, deployment.address, close)
    raw_close = "0x" + bytes(trader.sign_transaction(tx).raw_transaction).hex()
    with TestClient(app) as client:
        assert client.portal is not None
        relay = Blocking(app.state.runtime.require_relay(), client.portal)
        key, _ = keys_cli.create_key(app.state.runtime.keys, account=trader.address, scopes="read,trade")
        typed = relay.typed_data_for(
            parse_typed_data_query(
                {"kind": "close", "positionId": "0x" + position_id.hex(), "sizeDelta": "0.5"}
            )
        )
        signature = Account.sign_typed_data(trader.key, full_message=typed["typedData"]).signature
        signed_close = {
            "kind": "close",
            "request": typed["typedData"]["message"],
            "signature": "0x" + signature.hex(),
        }
        yield RelayApp(client, "0x" + position_id.hex(), key, raw_close, signed_close)


def _position_ids(real: str) -> st.SearchStrategy[Any]:
    return (
        st.sampled_from(
            [
                real,
                real.upper().replace("0X", "0x"),
                "0x" + "00" * 32,
                real[:-2] + " \t",  # whitespace that `bytes.fromhex` would skip (was a 500)
                real + "\n",
                real[:-2],
                "0x",
            ]
        )
        | st.text(max_size=70)
    )


def _hex_text(max_size: int) -> st.SearchStrategy[str]:
    return st.binary(max_size=max_size).map(lambda raw: "0x" + raw.hex())


FUZZ = settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
QUERY_TEXT = (
    st.text(max_size=20) | PLAUSIBLE.map(str) | numeric_text | st.sampled_from(["", "all", "true", "0"])
)


@FUZZ
@given(data=st.data())
def test_random_signed_relays_never_answer_5xx(relay_app: RelayApp, data: st.DataObject) -> None:
    request = st.fixed_dictionaries(
        {},
        optional={
            "positionId": _position_ids(relay_app.position_id) | values,
            **{
                name: PLAUSIBLE | values
                for name in ("sizeDelta", "allowedPrice", "price", "closeBps", "nonce", "deadline")
            },
            "isTakeProfit": st.booleans() | values,
        },
    )
    shaped = st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["close", "trigger"]) | values,
            "request": request | values,
            "signature": _hex_text(66)
            | st.binary(min_size=65, max_size=65).map(lambda b: "0x" + b.hex())
            | values,
        }
    )
    real = relay_app.signed_close
    mutated = st.builds(
        lambda name, value: {**real, "request": {**real["request"], name: value}},
        st.sampled_from(sorted(real["request"])),
        PLAUSIBLE.map(str) | values,
    )
    body = data.draw(st.one_of(shaped, shaped, mutated, st.just(real), values))
    response = relay_app.client.post(
        "/api/relay/signed", content=to_json(body), headers={"content-type": "application/json"}
    )
    assert_answered_with_a_code(response, body)


@FUZZ
@given(data=st.data())
def test_random_raw_relays_never_answer_5xx(relay_app: RelayApp, data: st.DataObject) -> None:
    real = relay_app.raw_close

    def mutate(index: int, byte: int) -> str:
        raw = bytearray.fromhex(real[2:])
        raw[index % len(raw)] = byte
        return "0x" + raw.hex()

    transactions = st.one_of(
        _hex_text(200),
        st.binary(max_size=200).map(lambda raw: "0x02" + raw.hex()),
        st.builds(mutate, st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        st.sampled_from([real, real + " ", real[:-2], real.upper().replace("0X", "0x")]),
        values,
    )
    body = data.draw(st.fixed_dictionaries({"transaction": transactions}) | values)
    response = relay_app.client.post(
        "/api/relay/raw", content=to_json(body), headers={"content-type": "application/json"}
    )
    assert_answered_with_a_code(response, body)


@FUZZ
@given(data=st.data())
def test_random_typed_data_queries_never_answer_5xx(relay_app: RelayApp, data: st.DataObject) -> None:
    names = ("sizeDelta", "allowedPrice", "isTakeProfit", "price", "closeBps", "deadline", "nonce")
    plausible = st.fixed_dictionaries(
        {"kind": st.sampled_from(["close", "trigger"]), "positionId": st.just(relay_app.position_id)},
        optional={
            **dict.fromkeys(names, PLAUSIBLE.map(str) | QUERY_TEXT),
            "isTakeProfit": st.sampled_from(["true", "false"]) | QUERY_TEXT,
        },
    )
    anything = st.fixed_dictionaries(
        {},
        optional={
            "kind": st.sampled_from(["close", "trigger"]) | QUERY_TEXT,
            "positionId": _position_ids(relay_app.position_id),
            **dict.fromkeys(names, QUERY_TEXT),
        },
    )
    params = data.draw(
        plausible
        | anything
        | st.dictionaries(st.sampled_from(["kind", "positionId", *names]) | st.text(max_size=8), QUERY_TEXT)
    )
    response = relay_app.client.get("/api/relay/typed-data", params=params)
    assert_answered_with_a_code(response, params)


API_KEY_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/api/partialclose", ("symbol", "exit_pct", "side", "positionId", "allowedPrice", "maxSlippageBps")),
        ("/api/trade/close", ("positionId", "sizeDelta", "allowedPrice", "maxSlippageBps")),
    ],
)
@FUZZ
@given(data=st.data())
def test_random_trading_requests_never_answer_5xx(
    relay_app: RelayApp, path: str, fields: tuple[str, ...], data: st.DataObject
) -> None:
    key = data.draw(
        st.sampled_from([None, relay_app.api_key, relay_app.api_key[:-1]])
        | st.text(API_KEY_CHARS, max_size=40)
    )
    special = {
        "symbol": st.sampled_from(["BTCUSDT", "btcusdt", "ETHUSDT", "NOPE", ""]),
        "side": st.sampled_from(["long", "short", "LONG", ""]),
        "positionId": _position_ids(relay_app.position_id),
        "exit_pct": st.integers(min_value=-5, max_value=105),
        "maxSlippageBps": st.integers(min_value=-5, max_value=10_005),
    }
    shaped = st.fixed_dictionaries(
        {},
        optional={
            **{field: special.get(field, PLAUSIBLE) | values for field in fields},
            "dry_run": st.booleans() | values,
        },
    )
    body = data.draw(
        st.one_of(shaped, shaped, st.dictionaries(st.text(max_size=10), values, max_size=4), values)
    )
    headers = {"content-type": "application/json"}
    if key is not None:
        headers[data.draw(st.sampled_from(["Authorization", "X-API-Key"]))] = key
        if "Authorization" in headers:
            headers["Authorization"] = f"Bearer {key}"
    response = relay_app.client.post(path, content=to_json(body), headers=headers)
    assert_answered_with_a_code(response, (body, key))
