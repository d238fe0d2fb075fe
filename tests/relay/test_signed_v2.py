"""The vault v2's signed requests relayed (issue 12): exit plans, order cancels, operator rights and emergency
exits, end to end on eth-tester and anvil (and both journals), signed with eth-account's `sign_typed_data`
from what `GET`/`POST /api/relay/typed-data` serves; every refusal a 4xx with its code, nothing journaled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader
from relayer.constants import RIGHT_CLOSE, RIGHT_SET_TAKE_PROFIT, RIGHT_TIGHTEN_STOP
from relayer.domain import calldata
from relayer.domain.sponsorship import Policy
from relayer.domain.status import RecordKind
from relayer.domain.typed_data import (
    EXIT_ORDER_FIELDS,
    REQUEST_TYPES,
    TYPED_DATA_FIELDS,
    EmergencyExitRequest,
    ExitPlanRequest,
    OperatorRequest,
    RequestKind,
    parse_request,
    parse_signed_relay,
    primary_type_of,
    request_from_params,
    typed_data,
)
from relayer.errors import InvalidCloseBpsError, InvalidFieldError, InvalidMarketError, RelayerError
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import Submission
from tests.blocking import Blocking
from tests.conftest import usd
from tests.relay.conftest import http_client, settle
from tests.relay.test_relay_e2e import raw_tx

PID = "0x" + "ab" * 32
OWNER = "0x" + "11" * 20
LADDER = [
    {"orderId": 0, "price": "97000", "shareBps": 2500},
    {"orderId": 1, "price": "98000", "shareBps": 2500},
    {"orderId": 2, "price": "99000", "shareBps": 2500},
    {"orderId": 4, "price": "94000", "shareBps": 10000, "trailBps": 200},
]
"""Three 25% take-profits and a trailing stop on the rest, for a long at the default 96,000."""


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def _signed(signer: LocalAccount, answer: dict[str, Any], **message: Any) -> dict[str, Any]:
    """The `POST /api/relay/signed` body of a typed-data answer signed by `signer` (its message changed by
    `message` before signing, when given)."""
    typed = answer["typedData"]
    typed = {**typed, "message": {**typed["message"], **message}}
    signature = Account.sign_typed_data(signer.key, full_message=typed).signature
    return {"kind": answer["kind"], "request": typed["message"], "signature": "0x" + signature.hex()}


def _served(client: TestClient, **params: Any) -> dict[str, Any]:
    """The typed data served for `params` (POSTed as JSON: `orders` a list)."""
    response = client.post("/api/relay/typed-data", json=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _relayed(client: TestClient, service: Blocking[RelayService], body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/relay/signed", json=body)
    assert response.status_code == 202, response.text
    settle(service)
    record: dict[str, Any] = client.get(f"/api/transactions/{response.json()['id']}").json()
    assert record["status"] == "confirmed", record
    return record


# --- pure: parameters and messages --------------------------------------------------------------------------


def test_the_new_kinds_parse_from_human_units() -> None:
    plan = request_from_params({"kind": "exit_plan", "positionId": PID, "orders": json.dumps(LADDER)})
    assert isinstance(plan, ExitPlanRequest)
    assert plan.orders == (
        (0, usd("97000"), 2500, 0),
        (1, usd("98000"), 2500, 0),
        (2, usd("99000"), 2500, 0),
        (4, usd("94000"), 10000, 200),
    )
    grant = request_from_params(
        {
            "kind": "operator_rights",
            "owner": OWNER,
            "operator": OWNER,
            "rights": "close,tighten_stop",
            "expiresAt": "0",
        }
    )
    assert isinstance(grant, OperatorRequest)
    assert (grant.rights, grant.expires_at, grant.kind) == (
        RIGHT_CLOSE | RIGHT_TIGHTEN_STOP,
        0,
        RecordKind.OPERATOR,
    )
    exit_all = request_from_params({"kind": "emergency_exit", "owner": OWNER})
    assert isinstance(exit_all, EmergencyExitRequest)
    assert (exit_all.market, exit_all.kind) == (None, RecordKind.CLOSE)
    assert exit_all.message()["market"] == "0x" + "00" * 32


@pytest.mark.parametrize(
    ("params", "error", "field"),
    [
        (
            {"kind": "exit_plan", "positionId": PID, "sizeDelta": "1", "orders": "[]"},
            InvalidFieldError,
            "sizeDelta",
        ),
        ({"kind": "emergency_exit", "owner": OWNER, "positionId": PID}, InvalidFieldError, "positionId"),
        ({"kind": "exit_plan", "positionId": PID}, InvalidFieldError, "orders"),
        ({"kind": "exit_plan", "positionId": PID, "orders": "{"}, InvalidFieldError, "orders"),
        ({"kind": "exit_plan", "positionId": PID, "orders": "[1]"}, InvalidFieldError, "orders"),
        (
            {"kind": "exit_plan", "positionId": PID, "orders": json.dumps([LADDER[0]] * 7)},
            InvalidFieldError,
            "orders",
        ),
        (
            {
                "kind": "exit_plan",
                "positionId": PID,
                "orders": '[{"orderId": 0, "price": "1", "shareBps": 1, "x": 1}]',
            },
            InvalidFieldError,
            "orders[0].x",
        ),
        (
            {
                "kind": "exit_plan",
                "positionId": PID,
                "orders": '[{"orderId": 6, "price": "1", "shareBps": 1}]',
            },
            InvalidFieldError,
            "orders[0].orderId",
        ),
        (
            {
                "kind": "exit_plan",
                "positionId": PID,
                "orders": '[{"orderId": 0, "price": "0", "shareBps": 1}]',
            },
            InvalidFieldError,
            "orders[0].price",
        ),
        (
            {
                "kind": "exit_plan",
                "positionId": PID,
                "orders": '[{"orderId": 0, "price": 0.1, "shareBps": 0}]',
            },
            InvalidCloseBpsError,
            "orders[0].shareBps",
        ),
        ({"kind": "cancel_order", "positionId": PID, "orderId": "6"}, InvalidFieldError, "orderId"),
        (
            {
                "kind": "operator_rights",
                "owner": OWNER,
                "operator": OWNER,
                "rights": "admin",
                "expiresAt": "0",
            },
            InvalidFieldError,
            "rights",
        ),
        (
            {"kind": "operator_rights", "owner": OWNER, "operator": OWNER, "rights": "1"},
            InvalidFieldError,
            "expiresAt",
        ),
        ({"kind": "emergency_exit", "owner": "0x" + "1" * 39}, InvalidFieldError, "owner"),
        ({"kind": "emergency_exit", "owner": OWNER, "market": "BTC/USDT"}, InvalidMarketError, "market"),
        ({"kind": "withdraw", "owner": OWNER}, InvalidFieldError, "kind"),
    ],
)
def test_typed_data_parameters_are_refused_by_name(
    params: dict[str, str], error: type[RelayerError], field: str
) -> None:
    with pytest.raises(error) as raised:
        request_from_params(params)
    assert raised.value.details["field"] == field


def test_out_of_range_rights_and_a_trailing_take_profit_are_the_vaults_own_errors() -> None:
    with pytest.raises(RelayerError) as rights:
        request_from_params(
            {"kind": "operator_rights", "owner": OWNER, "operator": OWNER, "rights": "16", "expiresAt": "0"}
        )
    assert rights.value.code == "invalid_operator_rights"
    trailing_tp = json.dumps([{"orderId": 1, "price": "99000", "shareBps": 5000, "trailBps": 100}])
    with pytest.raises(RelayerError) as trail:
        request_from_params({"kind": "exit_plan", "positionId": PID, "orders": trailing_tp})
    assert trail.value.code == "invalid_trail_bps"


def test_signed_messages_are_read_exactly_as_signed() -> None:
    """A message field the struct lacks is refused; an emergency exit's market word must spell a symbol back
    to the very bytes signed, so the relayed calldata is the signed request."""
    exit_btc = EmergencyExitRequest(OWNER, "BTCUSDT", 3, 10**9)
    message = typed_data(exit_btc, chain_id=1, vault=OWNER)["message"]
    assert parse_request(RequestKind.EMERGENCY_EXIT, message) == EmergencyExitRequest(
        "0x" + "11" * 20, "BTCUSDT", 3, 10**9
    )
    with pytest.raises(InvalidFieldError) as extra:
        parse_request(RequestKind.EMERGENCY_EXIT, {**message, "positionId": PID})
    assert extra.value.field == "request.positionId"
    lower = "0x" + b"btcusdt".ljust(32, b"\0").hex()
    with pytest.raises(InvalidMarketError) as market:
        parse_request(RequestKind.EMERGENCY_EXIT, {**message, "market": lower})
    assert market.value.field == "request.market"
    plan = ExitPlanRequest(bytes.fromhex(PID[2:]), ((0, usd("97000"), 2500, 0),), 0, 10**9)
    plan_message = typed_data(plan, chain_id=1, vault=OWNER)["message"]
    assert parse_request(RequestKind.EXIT_PLAN, plan_message) == plan
    with pytest.raises(InvalidFieldError) as order_field:
        parse_request(RequestKind.EXIT_PLAN, {**plan_message, "orders": [{"orderId": 0, "price": "1"}]})
    assert order_field.value.field == "request.orders[0].shareBps"


def _outcome(parse: Callable[..., Any], *args: Any) -> tuple[Any, RelayerError | None]:
    """What `parse(*args)` returned, or the error it refused with (anything else raises: a 500)."""
    try:
        return parse(*args), None
    except RelayerError as error:
        return None, error


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["0", "1", "15", "none", "close,tighten_stop", PID, OWNER, "BTCUSDT", "[]"])
    | st.sampled_from([json.dumps(LADDER), json.dumps(LADDER * 2), '[{"orderId": 0}]']),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from([*EXIT_ORDER_FIELDS, "x"]), inner, max_size=5)
    ),
    max_leaves=12,
)
"""JSON-ish values: what a query string or a JSON body can carry, and then some."""


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from([kind.value for kind in RequestKind]) | st.text(max_size=8),
    params=st.dictionaries(st.sampled_from([*TYPED_DATA_FIELDS, "x"]), JSON_VALUES, max_size=8),
)
def test_random_typed_data_parameters_are_served_or_refused_with_a_4xx(
    kind: str, params: dict[str, Any]
) -> None:
    request, refused = _outcome(request_from_params, {**params, "kind": kind})
    if refused is not None:
        assert 400 <= refused.http_status < 500, refused
    else:
        assert request.request_kind.value == kind


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(list(RequestKind)),
    message=st.dictionaries(
        st.sampled_from(
            [
                "positionId",
                "owner",
                "operator",
                "orders",
                "orderId",
                "rights",
                "expiresAt",
                "market",
                "nonce",
                "deadline",
                "price",
                "x",
            ]
        ),
        JSON_VALUES,
        max_size=8,
    ),
)
def test_random_signed_messages_are_read_or_refused_with_a_4xx(
    kind: RequestKind, message: dict[str, Any]
) -> None:
    _, refused = _outcome(parse_request, kind, message)
    if refused is not None:
        assert 400 <= refused.http_status < 500, refused
    else:
        fields = {field["name"] for field in REQUEST_TYPES[primary_type_of(kind)]}
        assert set(message) == fields  # read only when every field of the struct, and nothing else, is there


# --- each kind relayed end to end ---------------------------------------------------------------------------


def test_exit_plan_then_cancel_relayed_and_read_from_the_vault(
    accounts: list[LocalAccount],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader, size="0.42")
    pid = "0x" + position_id.hex()
    answer = _served(client, kind="exit_plan", positionId=pid, orders=LADDER)
    assert answer["kind"] == "exit_plan"
    assert answer["owner"] == trader.address
    assert answer["typedData"]["primaryType"] == "SetExitPlanRequest"
    body = _signed(trader, answer)
    orders = body["request"]["orders"]
    tampered = {
        **body,
        "request": {**body["request"], "orders": [{**orders[0], "shareBps": 5000}, *orders[1:]]},
    }
    assert _error(client.post("/api/relay/signed", json=tampered)) == (422, "invalid_signature")
    stranger = _signed(accounts[2], answer)  # a valid signature, by someone who does not own the position
    assert _error(client.post("/api/relay/signed", json=stranger)) == (422, "invalid_signature")
    assert service.list() == []
    record = _relayed(client, service, body)
    assert record["kind"] == "trigger"
    assert record["account"] == trader.address
    plan = vault.orders_of(position_id)
    assert {(o.order_id, o.price_e8, o.share_bps, o.trail_bps) for o in plan.orders} == {
        (0, usd("97000"), 2500, 0),
        (1, usd("98000"), 2500, 0),
        (2, usd("99000"), 2500, 0),
        (4, usd("94000"), 10000, 200),
    }
    tier_sizes = {o.order_id: o.size_if_executed for o in plan.orders}
    assert tier_sizes[0] == 105 * 10**15  # 25% of 0.42

    # The cancel through GET (the old form of the route), its nonce the next one.
    cancel = client.get(
        "/api/relay/typed-data", params={"kind": "cancel_order", "positionId": pid, "orderId": 1}
    )
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["typedData"]["message"]["nonce"] == "1"
    _relayed(client, service, _signed(trader, cancel.json()))
    assert sorted(o.order_id for o in vault.orders_of(position_id).orders) == [0, 2, 4]
    assert vault.nonce_of(trader.address) == 2


def test_operator_rights_relayed_for_the_owner_it_names(
    accounts: list[LocalAccount],
    vault: VaultReader,
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    owner, agent = accounts[2], accounts[3]
    params = {
        "kind": "operator_rights",
        "owner": owner.address.lower(),
        "operator": agent.address,
        "rights": "close,set_take_profit,tighten_stop",
        "expiresAt": "4000000000",
    }
    answer = client.get("/api/relay/typed-data", params=params)
    assert answer.status_code == 200, answer.text
    served = answer.json()
    assert served["owner"] == owner.address  # checksummed
    assert (
        served["typedData"]["message"]["rights"] == RIGHT_CLOSE | RIGHT_SET_TAKE_PROFIT | RIGHT_TIGHTEN_STOP
    )
    record = _relayed(client, service, _signed(owner, served))
    assert record["kind"] == "operator"
    assert record["account"] == owner.address
    events = {event["event"] for event in record["receipt"]["events"]}
    assert {"OperatorRightsSet", "NonceUsed"} <= events
    grant = vault.operator_grant(owner.address, agent.address)
    assert (grant.rights, grant.expires_at) == (7, 4_000_000_000)


def test_emergency_exit_closes_one_market_then_every_position(
    accounts: list[LocalAccount],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    owner = accounts[3]
    btc = [open_position(owner=owner, size="0.5"), open_position(owner=owner, size="0.25", is_long=False)]
    eth = open_position(owner=owner, market="ETHUSDT", size="2")
    other = open_position(owner=accounts[1], size="1")

    answer = _served(client, kind="emergency_exit", owner=owner.address, market="btcusdt")
    assert answer["typedData"]["message"]["market"] == "0x" + b"BTCUSDT".ljust(32, b"\0").hex()
    record = _relayed(client, service, _signed(owner, answer))
    assert record["kind"] == "close"
    closed = [e["args"] for e in record["receipt"]["events"] if e["event"] == "PositionDecreased"]
    assert sorted(c["positionId"] for c in closed) == sorted("0x" + p.hex() for p in btc)
    assert [vault.position(p).size for p in btc] == [0, 0]
    assert vault.position(eth).size == 2 * 10**18

    everything = _served(client, kind="emergency_exit", owner=owner.address)
    record = _relayed(client, service, _signed(owner, everything))
    assert [
        e["args"]["positionId"] for e in record["receipt"]["events"] if e["event"] == "PositionDecreased"
    ] == ["0x" + eth.hex()]
    assert vault.position(eth).size == 0
    assert vault.position(other).size == 10**18  # another owner's position is untouched

    nothing_left = _served(client, kind="emergency_exit", owner=owner.address)
    before = len(service.list())
    refused = client.post("/api/relay/signed", json=_signed(owner, nothing_left))
    assert refused.status_code == 404, refused.text  # a paid no-op is never sent
    assert refused.json()["error"]["code"] == "position_not_found"
    assert len(service.list()) == before


# --- replay rules -------------------------------------------------------------------------------------------


def test_owner_named_requests_follow_the_replay_rules(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    owner, stranger, agent = accounts[2], accounts[4], accounts[3]
    params = {
        "kind": "operator_rights",
        "owner": owner.address,
        "operator": agent.address,
        "rights": 1,
        "expiresAt": 0,
    }
    served = _served(client, **params)
    latest = chain.w3.eth.get_block("latest")["timestamp"]

    refusals = {
        "stranger": _signed(stranger, served),  # signed by someone else for the owner it names
        "tampered": {**_signed(owner, served), "request": {**served["typedData"]["message"], "rights": 15}},
        "expired": _signed(owner, served, deadline=str(latest - 1)),
        "too soon": _signed(owner, served, deadline=str(latest + 1)),
        "next nonce": _signed(owner, served, nonce="1"),
        "rights 16": _signed(owner, served, rights=16),
    }
    foreign = {
        **served["typedData"],
        "domain": {**served["typedData"]["domain"], "chainId": chain.w3.eth.chain_id + 1},
    }
    signature = Account.sign_typed_data(owner.key, full_message=foreign).signature
    refusals["foreign chain"] = {
        "kind": "operator_rights",
        "request": foreign["message"],
        "signature": "0x" + signature.hex(),
    }
    codes = {name: _error(client.post("/api/relay/signed", json=body)) for name, body in refusals.items()}
    assert codes == {
        "stranger": (422, "invalid_signature"),
        "tampered": (422, "invalid_signature"),
        "expired": (422, "request_expired"),
        "too soon": (422, "deadline_too_soon"),
        "next nonce": (409, "invalid_nonce"),
        "rights 16": (422, "invalid_operator_rights"),
        "foreign chain": (422, "invalid_signature"),
    }
    assert service.list() == []

    good = _signed(owner, served)
    _relayed(client, service, good)
    assert _error(client.post("/api/relay/signed", json=good)) == (409, "invalid_nonce")  # replayed
    assert len(service.list()) == 1

    # A grant is never carried raw, even the owner's own signed one (`relayer.domain.policy`).
    with_sig = parse_signed_relay(_signed(owner, _served(client, **params))).calldata
    raw = raw_tx(chain, owner, deployment.address, with_sig, gas=200_000)
    assert _error(client.post("/api/relay/raw", json={"transaction": raw})) == (422, "disallowed_transaction")


def test_copies_of_one_signed_emergency_exit_sent_at_once_are_relayed_once(
    accounts: list[LocalAccount],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    owner = accounts[1]
    position_id = open_position(owner=owner, size="1")
    relay = parse_signed_relay(_signed(owner, _served(client, kind="emergency_exit", owner=owner.address)))

    async def race(key: str | None) -> list[Submission | BaseException]:
        calls = [service.inner.submit_signed(relay, idempotency_key=key) for _ in range(5)]
        return await asyncio.gather(*calls, return_exceptions=True)

    keyed = service.portal.call(race, "exit-once")
    assert all(isinstance(answer, Submission) for answer in keyed), keyed
    assert len({answer.record.id for answer in keyed if isinstance(answer, Submission)}) == 1
    # No key: every copy is refused, as the request in flight or, once it mined, as a used nonce or as
    # closing nothing (the exit is probed in the same batch as the nonce).
    unkeyed = service.portal.call(race, None)
    codes = {answer.code for answer in unkeyed if isinstance(answer, RelayerError)}
    assert codes
    assert codes <= {"duplicate_request", "invalid_nonce", "position_not_found"}
    assert not any(isinstance(answer, Submission) and answer.created for answer in unkeyed)
    settle(service)
    assert len(service.list()) == 1
    assert vault.position(position_id).size == 0
    assert vault.nonce_of(owner.address) == 1


# --- plans the vault refuses --------------------------------------------------------------------------------


def test_a_plan_the_vault_refuses_is_refused_before_anything_is_sent(
    accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], Any],
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    pid = "0x" + position_id.hex()
    below = [{"orderId": 0, "price": "95000", "shareBps": 5000}]  # a long's take-profit under the price
    served = client.post(
        "/api/relay/typed-data", json={"kind": "exit_plan", "positionId": pid, "orders": below}
    )
    assert _error(served) == (422, "invalid_trigger_price")

    # Signed anyway (a payload built elsewhere): the same errors, checked at the price read with the nonce.
    good = _served(client, kind="exit_plan", positionId=pid, orders=LADDER[:1])
    bad_orders = [
        {"orderId": 0, "price": str(usd("97000")), "shareBps": 6000, "trailBps": 0},
        {"orderId": 4, "price": str(usd("94000")), "shareBps": 6000, "trailBps": 0},
    ]
    over = _signed(trader, good, orders=bad_orders)
    assert _error(client.post("/api/relay/signed", json=over)) == (422, "plan_shares_exceeded")
    assert _error(
        client.post(
            "/api/relay/signed",
            json=_signed(
                trader,
                good,
                orders=[{"orderId": 0, "price": str(usd("95000")), "shareBps": 5000, "trailBps": 0}],
            ),
        )
    ) == (422, "invalid_trigger_price")
    cancel = _served(client, kind="cancel_order", positionId=pid, orderId=4)
    assert _error(client.post("/api/relay/signed", json=_signed(trader, cancel, orderId=9))) == (
        422,
        "invalid_order_id",
    )

    # No price check possible (the position closed meanwhile): the simulation's revert, mapped.
    transact(trader, calldata.close_position(position_id, 2**256 - 1, 0))
    assert _error(client.post("/api/relay/signed", json=_signed(trader, good))) == (404, "position_not_found")
    assert service.list() == []


# --- paid no-ops: refused before anything is sent ----------------------------------------------------------


def _refused_unsent(
    client: TestClient,
    service: Blocking[RelayService],
    vault: VaultReader,
    owner: LocalAccount,
    body: dict[str, Any],
) -> tuple[int, str]:
    """The status and code `POST /api/relay/signed` refused `body` with, after checking that nothing was
    journaled (so nothing signed or sent) and that the owner's vault nonce did not move."""
    journaled, nonce = len(service.list()), vault.nonce_of(owner.address)
    answer = _error(client.post("/api/relay/signed", json=body))
    assert len(service.list()) == journaled
    assert vault.nonce_of(owner.address) == nonce
    return answer


def _trigger(
    client: TestClient, pid: str, take_profit: bool, price: str, close_bps: int = 0
) -> dict[str, Any]:
    """The typed data of an old-style `trigger` (price 0 cancels the primary take-profit or stop)."""
    params: dict[str, Any] = {
        "kind": "trigger",
        "positionId": pid,
        "isTakeProfit": take_profit,
        "price": price,
    }
    return _served(client, **params, **({"closeBps": close_bps} if close_bps else {}))


def test_a_signed_cancel_of_an_order_not_pending_is_refused_unsent(
    accounts: list[LocalAccount],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    """The vault runs `cancelOrder` of an empty id as a no-op the relayer would pay for: 404 instead."""
    trader = accounts[1]
    position_id = open_position(owner=trader, size="0.42")
    pid = "0x" + position_id.hex()
    nothing = {
        "cancel_order 1": _served(client, kind="cancel_order", positionId=pid, orderId=1),
        "cancel_order 5": _served(client, kind="cancel_order", positionId=pid, orderId=5),
        "trigger take-profit at 0": _trigger(client, pid, True, "0"),
        "trigger stop at 0": _trigger(client, pid, False, "0"),
    }
    codes = {
        name: _refused_unsent(client, service, vault, trader, _signed(trader, served))
        for name, served in nothing.items()
    }
    assert codes == dict.fromkeys(nothing, (404, "order_not_found"))

    _relayed(
        client, service, _signed(trader, _served(client, kind="exit_plan", positionId=pid, orders=LADDER))
    )
    _relayed(
        client, service, _signed(trader, _served(client, kind="cancel_order", positionId=pid, orderId=1))
    )
    _relayed(
        client, service, _signed(trader, _trigger(client, pid, False, "0"))
    )  # stop 4, pending: cancelled
    assert sorted(o.order_id for o in vault.orders_of(position_id).orders) == [0, 2]
    again = {
        "cancel_order 1": _served(client, kind="cancel_order", positionId=pid, orderId=1),
        "trigger stop at 0": _trigger(client, pid, False, "0"),
    }
    codes = {
        name: _refused_unsent(client, service, vault, trader, _signed(trader, served))
        for name, served in again.items()
    }
    assert codes == dict.fromkeys(again, (404, "order_not_found"))
    assert vault.nonce_of(trader.address) == 3  # the three relayed, none of the refused


def test_a_signed_change_that_changes_nothing_is_refused_unsent(
    accounts: list[LocalAccount],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    """An exit plan or trigger whose plan after (orders and `D`) is the plan now: 409 `nothing_to_change`;
    the typed data of such an exit plan too. A plan that changes one share is relayed."""
    trader = accounts[2]
    position_id = open_position(owner=trader, size="0.42")
    pid = "0x" + position_id.hex()
    served = _served(client, kind="exit_plan", positionId=pid, orders=LADDER)
    body = _signed(trader, served)
    _relayed(client, service, body)
    plan = vault.orders_of(position_id)

    assert _error(
        client.post("/api/relay/typed-data", json={"kind": "exit_plan", "positionId": pid, "orders": LADDER})
    ) == (409, "nothing_to_change")
    next_nonce = str(vault.nonce_of(trader.address))
    shuffled = [*reversed(body["request"]["orders"])]  # the same orders listed in another order
    same = {
        "exit_plan": _signed(trader, served, nonce=next_nonce),
        "exit_plan reordered": _signed(trader, served, nonce=next_nonce, orders=shuffled),
        "trigger take-profit 0 as it is": _signed(trader, _trigger(client, pid, True, "97000", 2500)),
    }
    codes = {name: _refused_unsent(client, service, vault, trader, b) for name, b in same.items()}
    assert codes == dict.fromkeys(same, (409, "nothing_to_change"))
    assert vault.orders_of(position_id) == plan

    changed = [{**LADDER[0], "shareBps": 2000}, *LADDER[1:]]
    _relayed(
        client, service, _signed(trader, _served(client, kind="exit_plan", positionId=pid, orders=changed))
    )
    assert vault.orders_of(position_id).order(0).share_bps == 2000  # type: ignore[union-attr]
    _relayed(client, service, _signed(trader, _trigger(client, pid, True, "97000", 2500)))  # now a change
    again = _signed(trader, _trigger(client, pid, True, "97000", 2500))
    assert _refused_unsent(client, service, vault, trader, again) == (409, "nothing_to_change")


def test_a_signed_trigger_is_checked_against_the_pending_orders_unsent(
    accounts: list[LocalAccount],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    """An old-style trigger setting an order meets the vault's rules for the plan it joins (checked with the
    orders read in the request's batch), as an exit plan does: the vault's own errors, nothing sent."""
    trader = accounts[3]
    position_id = open_position(owner=trader, size="0.42")
    pid = "0x" + position_id.hex()
    _relayed(
        client, service, _signed(trader, _served(client, kind="exit_plan", positionId=pid, orders=LADDER))
    )
    refused = {
        # take-profit 0 beyond take-profit 1 (98,000): ids follow the order a price reaches them
        "out of sequence": _trigger(client, pid, True, "98500", 2500),
        # a long's take-profit under the price
        "under the price": _trigger(client, pid, True, "95000", 2500),
        # a partial stop: 7,500 of the take-profits + 5,000 > D = 10,000
        "shares": _trigger(client, pid, False, "94000", 5000),
    }
    codes = {
        name: _refused_unsent(client, service, vault, trader, _signed(trader, s))
        for name, s in refused.items()
    }
    assert codes == {
        "out of sequence": (422, "order_out_of_sequence"),
        "under the price": (422, "invalid_trigger_price"),
        "shares": (422, "plan_shares_exceeded"),
    }
    _relayed(client, service, _signed(trader, _trigger(client, pid, False, "94500", 2500)))  # fits: relayed
    stop = vault.orders_of(position_id).order(4)
    assert stop is not None
    assert (stop.price_e8, stop.share_bps, stop.trail_bps) == (usd("94500"), 2500, 0)


def test_owner_named_requests_are_charged_to_the_owner_they_name(
    accounts: list[LocalAccount],
    make_service: Callable[..., Blocking[RelayService]],
) -> None:
    service = make_service(policy=Policy(owner_requests_per_window=1, window_s=60))
    client = http_client(service)
    owner, agent = accounts[2], accounts[3]
    grant = {
        "kind": "operator_rights",
        "owner": owner.address,
        "operator": agent.address,
        "rights": 1,
        "expiresAt": 0,
    }
    _relayed(client, service, _signed(owner, _served(client, **grant)))
    refused = client.post(
        "/api/relay/signed", json=_signed(owner, _served(client, kind="emergency_exit", owner=owner.address))
    )
    assert _error(refused) == (429, "quota_exceeded")
    assert len(service.list()) == 1
    other = accounts[4]
    _relayed(client, service, _signed(other, _served(client, **{**grant, "owner": other.address})))


def test_typed_data_refuses_unknown_and_other_kinds_fields(
    accounts: list[LocalAccount], open_position: Callable[..., bytes], client: TestClient
) -> None:
    pid = "0x" + open_position(owner=accounts[1]).hex()
    answer = client.get(
        "/api/relay/typed-data",
        params={"kind": "emergency_exit", "owner": accounts[1].address, "positionId": pid},
    )
    assert _error(answer) == (422, "invalid_field")
    assert answer.json()["error"]["details"]["field"] == "positionId"
    unknown = client.post("/api/relay/typed-data", json={"kind": "cancel_order", "positionId": pid, "id": 1})
    assert _error(unknown) == (422, "invalid_field")
    assert unknown.json()["error"]["details"]["field"] == "id"
    old = client.post(
        "/api/relay/typed-data",
        json={"kind": "trigger", "positionId": pid, "isTakeProfit": True, "price": 99000, "closeBps": 5000},
    )
    assert old.status_code == 200, old.text
    assert old.json()["kind"] == "trigger"
