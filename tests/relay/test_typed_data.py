"""`GET /api/relay/typed-data` and signed requests follow `relayer.domain.requests`'s rules, the same ones the
close API uses: a payload the relayer hands out is one it will relay once signed, and malformed input is a 422
with a code (never a 500), on eth-tester and anvil."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from relayer.chain.transact import send
from relayer.constants import CLOSE_ALL_SIZE, MAX_TRIGGER_PRICE_E8
from relayer.domain import calldata
from relayer.domain.status import RecordKind
from relayer.domain.typed_data import (
    CloseRequest,
    TriggerRequest,
    parse_typed_data_query,
    request_from_params,
)
from relayer.errors import InvalidCloseBpsError, InvalidFieldError, InvalidPriceError, RelayerError
from relayer.services.relay.service import RelayService
from tests.blocking import Blocking
from tests.conftest import usd
from tests.relay.conftest import settle

PID = "0x" + "ab" * 32


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# --- pure: the parameters -----------------------------------------------------------------------------------


def test_absent_size_is_the_only_way_to_say_close_all() -> None:
    request = request_from_params({"kind": "close", "positionId": PID, "sizeDelta": None})
    assert isinstance(request, CloseRequest)
    assert (request.size_delta, request.allowed_price_e8) == (CLOSE_ALL_SIZE, 0)
    for field, value in (("sizeDelta", ""), ("sizeDelta", "all"), ("allowedPrice", ""), ("sizeDelta", "0")):
        with pytest.raises(InvalidFieldError) as raised:
            request_from_params({"kind": "close", "positionId": PID, field: value})
        assert raised.value.field == field


@pytest.mark.parametrize(
    ("params", "error", "field"),
    [
        ({"price": "99000", "closeBps": "0"}, InvalidCloseBpsError, "closeBps"),
        ({"price": "99000", "closeBps": "10001"}, InvalidCloseBpsError, "closeBps"),
        ({"price": "99000"}, InvalidFieldError, "closeBps"),  # setting needs the share
        ({"price": "99000", "closeBps": "12.5"}, InvalidFieldError, "closeBps"),
        ({"price": "0", "closeBps": "5000"}, InvalidFieldError, "closeBps"),  # a cancel takes none
        ({"price": "0", "closeBps": "0"}, InvalidFieldError, "closeBps"),
        ({"price": str(MAX_TRIGGER_PRICE_E8 + 1)[:-8] + "." + "9" * 8}, InvalidPriceError, "price"),
        ({"closeBps": "5000"}, InvalidFieldError, "price"),
        ({"price": "", "closeBps": "5000"}, InvalidFieldError, "price"),
    ],
)
def test_trigger_parameters_follow_the_close_request_rules(
    params: dict[str, str], error: type[RelayerError], field: str
) -> None:
    with pytest.raises(error) as raised:
        request_from_params({"kind": "trigger", "positionId": PID, "isTakeProfit": "true", **params})
    assert raised.value.details["field"] == field


def test_a_cancel_signs_a_zero_share_and_a_set_its_share() -> None:
    cancel = request_from_params(
        {"kind": "trigger", "positionId": PID, "isTakeProfit": "false", "price": "0"}
    )
    assert isinstance(cancel, TriggerRequest)
    assert (cancel.is_take_profit, cancel.price_e8, cancel.close_bps) == (False, 0, 0)
    order = request_from_params(
        {"kind": "trigger", "positionId": PID, "isTakeProfit": "true", "price": "99000", "closeBps": "2500"}
    )
    assert isinstance(order, TriggerRequest)
    assert (order.kind, order.price_e8, order.close_bps) == (RecordKind.TRIGGER, usd("99000"), 2500)


@pytest.mark.parametrize(
    "position_id",
    [
        "0x" + "ab" * 31 + " \t",  # bytes.fromhex skips whitespace: this was a 31-byte id and a 500
        "0x" + "ab" * 32 + "\n",  # `$` matches before a trailing newline
        "0x" + "ab" * 31 + "a",
        " 0x" + "ab" * 32,
        "0X" + "ab" * 32,
    ],
)
def test_position_ids_are_exactly_32_bytes_of_hex(position_id: str) -> None:
    with pytest.raises(InvalidFieldError) as raised:
        request_from_params({"kind": "close", "positionId": position_id})
    assert raised.value.field == "positionId"


# --- over HTTP, against the chain ---------------------------------------------------------------------------


def test_malformed_position_ids_are_a_422_on_every_relay_route(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    position_id = open_position(owner=accounts[1])
    whitespace = "0x" + position_id.hex()[:62] + " \t"
    answer = client.get("/api/relay/typed-data", params={"kind": "close", "positionId": whitespace})
    assert _error(answer) == (422, "invalid_field")
    assert answer.json()["error"]["details"]["field"] == "positionId"

    body = signed_body(accounts[1], position_id)
    body["request"] = {**body["request"], "positionId": whitespace}
    refused = client.post("/api/relay/signed", json=body)
    assert _error(refused) == (422, "invalid_field")
    assert refused.json()["error"]["details"]["field"] == "request.positionId"


def test_typed_data_refuses_what_the_relay_would_refuse(
    accounts: list[LocalAccount], open_position: Callable[..., bytes], client: TestClient
) -> None:
    position_id = "0x" + open_position(owner=accounts[1]).hex()

    def typed(**params: str) -> Any:
        return client.get("/api/relay/typed-data", params={"positionId": position_id, **params})

    trigger = {"kind": "trigger", "isTakeProfit": "true"}
    assert _error(typed(**trigger, price="99000", closeBps="0")) == (422, "invalid_close_bps")
    assert _error(typed(**trigger, price="99000")) == (422, "invalid_field")
    assert _error(typed(**trigger, price="1" + "0" * 30, closeBps="1")) == (422, "invalid_price")
    assert _error(typed(kind="close", sizeDelta="")) == (422, "invalid_field")
    assert _error(typed(kind="close", sizeDelta="all")) == (422, "invalid_field")
    assert _error(typed(kind="close", allowedPrice="")) == (422, "invalid_field")
    cancel = typed(**trigger, price="0")
    assert cancel.status_code == 200, cancel.text
    assert (
        cancel.json()["typedData"]["message"]["price"],
        cancel.json()["typedData"]["message"]["closeBps"],
    ) == (
        "0",
        0,
    )


def test_a_signed_trigger_the_vault_would_refuse_is_refused_before_sending(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    good = service.typed_data_for(
        parse_typed_data_query(
            {
                "kind": "trigger",
                "positionId": "0x" + position_id.hex(),
                "isTakeProfit": "true",
                "price": "99000",
                "closeBps": "5000",
            }
        )
    )["typedData"]

    def signed(**message: Any) -> dict[str, Any]:
        payload = {**good, "message": {**good["message"], **message}}
        signature = Account.sign_typed_data(trader.key, full_message=payload).signature
        return {"kind": "trigger", "request": payload["message"], "signature": "0x" + signature.hex()}

    assert _error(client.post("/api/relay/signed", json=signed(closeBps=0))) == (422, "invalid_close_bps")
    too_high = signed(price=str(MAX_TRIGGER_PRICE_E8 + 1), closeBps=1)
    assert _error(client.post("/api/relay/signed", json=too_high)) == (422, "invalid_price")
    assert service.list() == []  # nothing was journaled or sent


def test_relayed_calls_are_recorded_by_what_they_do(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    service: Blocking[RelayService],
    set_market_price: Callable[[str, str], None],
    chain: Any,
    deployment: Any,
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    send(
        chain.w3,
        trader,
        deployment.address,
        calldata.encode_call("setTakeProfit", position_id, usd("97000"), 10_000),
    )
    set_market_price("BTCUSDT", "98000")
    record = service.submit_call(calldata.encode_call("executeTrigger", position_id)).record
    assert record.kind is RecordKind.EXECUTE  # was recorded as a `trigger`
    settle(service)
    assert service.get(record.id).status == "confirmed"
