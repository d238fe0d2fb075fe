"""Relaying end to end on eth-tester and anvil: gasless signed requests, raw transactions, idempotency, and
every rejection, through HTTP and real eth-account signatures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.transact import build_transaction
from relayer.chain.vault import VaultReader
from relayer.domain import calldata
from relayer.domain.apikeys import ApiKey, Scope
from relayer.domain.typed_data import parse_signed_relay, parse_typed_data_query
from relayer.faces.api.relay_routes import records_reader
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import KEEPER_SCOPE
from tests.blocking import Blocking
from tests.conftest import units, usd
from tests.relay.conftest import http_client, settle


def raw_tx(chain: Chain, account: LocalAccount, to: str, data: bytes, **overrides: Any) -> str:
    tx = build_transaction(chain.w3, account.address, to, data)
    tx.update(overrides)
    return "0x" + bytes(account.sign_transaction(tx).raw_transaction).hex()


def test_gasless_close_end_to_end(
    chain: Chain,
    accounts: list[LocalAccount],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader, size="1")
    balance_before = chain.w3.eth.get_balance(trader.address)
    answer = client.get(
        "/api/relay/typed-data", params={"kind": "close", "positionId": "0x" + position_id.hex()}
    )
    assert answer.status_code == 200, answer.text
    typed = answer.json()["typedData"]
    assert typed["message"]["sizeDelta"] == str(2**256 - 1)  # close all
    signature = Account.sign_typed_data(trader.key, full_message=typed).signature

    response = client.post(
        "/api/relay/signed",
        json={"kind": "close", "request": typed["message"], "signature": "0x" + signature.hex()},
    )
    assert response.status_code == 202, response.text
    record_id = response.json()["id"]
    settle(service)

    record = client.get(f"/api/transactions/{record_id}").json()
    assert record["status"] == "confirmed"
    assert record["from"] in {a.address for a in accounts[5:7]}
    assert record["account"] == trader.address  # the relayer paid; the record acts for the signer
    assert record["receipt"]["success"] is True
    events = {event["event"]: event["args"] for event in record["receipt"]["events"]}
    assert events["PositionDecreased"]["remainingSize"] == "0"
    assert events["NonceUsed"]["owner"] == trader.address
    assert vault.position(position_id).size == 0
    assert chain.w3.eth.get_balance(trader.address) == balance_before  # gasless for the trader
    assert vault.contract.functions.nonces(trader.address).call() == 1


def test_signed_set_trigger(
    accounts: list[LocalAccount],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    trader = accounts[2]
    position_id = open_position(owner=trader)
    body = signed_body(trader, position_id, "trigger", isTakeProfit="true", price="99000", closeBps="5000")
    response = client.post("/api/relay/signed", json=body)
    assert response.status_code == 202, response.text
    settle(service)
    assert service.get(response.json()["id"]).status == "confirmed"
    position = vault.position(position_id)
    assert (position.take_profit.price_e8, position.take_profit.close_bps) == (usd("99000"), 5000)


def test_raw_relay(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader, size="1")
    signed = raw_tx(chain, trader, deployment.address, calldata.close_position(position_id, units("0.25"), 0))
    response = client.post("/api/relay/raw", json={"transaction": signed})
    assert response.status_code == 202, response.text
    assert response.json()["from"] == trader.address
    settle(service)
    record = service.get(response.json()["id"])
    assert record.status == "confirmed"
    assert record.account == trader.address  # a raw transaction acts for its own sender
    assert vault.position(position_id).size == units("0.75")
    # The same bytes again are the same record, never a second transaction.
    again = client.post("/api/relay/raw", json={"transaction": signed})
    assert again.status_code == 200
    assert again.json()["id"] == record.id


def test_idempotency_key(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    body = signed_body(trader, position_id, sizeDelta="0.5")
    first = client.post("/api/relay/signed", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202, first.text
    settle(service)
    second = client.post("/api/relay/signed", json=body, headers={"Idempotency-Key": "k-1"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert len(service.list()) == 1

    other = signed_body(trader, position_id, sizeDelta="0.25")
    conflict = client.post("/api/relay/signed", json=other, headers={"Idempotency-Key": "k-1"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert len(service.list()) == 1


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_rejects_raw_wrong_target_function_and_chain(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    close = calldata.close_position(position_id, units("0.1"), 0)
    wrong_target = raw_tx(chain, trader, accounts[3].address, b"", gas=21_000)
    assert _error(client.post("/api/relay/raw", json={"transaction": wrong_target})) == (
        422,
        "disallowed_transaction",
    )
    wrong_function = raw_tx(
        chain, trader, deployment.address, calldata.set_operator(accounts[3].address, True)
    )
    assert _error(client.post("/api/relay/raw", json={"transaction": wrong_function})) == (
        422,
        "disallowed_transaction",
    )
    wrong_chain = raw_tx(chain, trader, deployment.address, close, chainId=chain.w3.eth.chain_id + 1)
    assert _error(client.post("/api/relay/raw", json={"transaction": wrong_chain})) == (
        422,
        "disallowed_transaction",
    )
    garbage = client.post("/api/relay/raw", json={"transaction": "0x02deadbeef"})
    assert _error(garbage) == (422, "disallowed_transaction")
    assert _error(client.post("/api/relay/raw", json={"transaction": 5})) == (422, "invalid_field")
    # A call that would revert (slippage bound above the price of a long) is simulated and refused.
    reverting = raw_tx(chain, trader, deployment.address, close, gas=200_000)
    trader_nonce = chain.w3.eth.get_transaction_count(trader.address)
    client.post("/api/relay/raw", json={"transaction": reverting})  # fine: this one is valid
    settle(service)
    slipping = calldata.close_position(position_id, units("0.1"), usd("1000000"))
    tx = {**build_transaction(chain.w3, trader.address, deployment.address, close), "data": slipping}
    tx["nonce"] = trader_nonce + 1
    signed = "0x" + bytes(trader.sign_transaction(tx).raw_transaction).hex()
    assert _error(client.post("/api/relay/raw", json={"transaction": signed})) == (409, "price_slippage")
    assert len(service.list()) == 1  # only the valid one was journaled


def test_rejects_bad_signed_requests(
    chain: Chain,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    trader, stranger = accounts[1], accounts[2]
    position_id = open_position(owner=trader)
    latest = chain.w3.eth.get_block("latest")["timestamp"]

    expired = signed_body(trader, position_id, deadline=str(latest - 1))
    assert _error(client.post("/api/relay/signed", json=expired)) == (422, "request_expired")

    not_owner = signed_body(stranger, position_id)
    assert _error(client.post("/api/relay/signed", json=not_owner)) == (422, "invalid_signature")

    good = signed_body(trader, position_id, sizeDelta="0.1")
    tampered = {**good, "request": {**good["request"], "sizeDelta": str(units("0.2"))}}
    assert _error(client.post("/api/relay/signed", json=tampered)) == (422, "invalid_signature")
    signature = bytes.fromhex(good["signature"][2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = (
        signature[:32]
        + (n - int.from_bytes(signature[32:64], "big")).to_bytes(32, "big")
        + bytes([55 - signature[64]])
    )
    malleable = {**good, "signature": "0x" + high_s.hex()}
    assert _error(client.post("/api/relay/signed", json=malleable)) == (422, "invalid_signature")

    wrong_nonce = signed_body(trader, position_id, nonce="7")
    assert _error(client.post("/api/relay/signed", json=wrong_nonce)) == (409, "invalid_nonce")

    assert client.post("/api/relay/signed", json=good).status_code == 202
    settle(service)
    replayed = client.post("/api/relay/signed", json=good)
    assert _error(replayed) == (409, "invalid_nonce")
    assert len(service.list()) == 1


def test_relay_bodies_with_unknown_or_doubled_fields_are_refused(
    chain: Chain,
    accounts: list[LocalAccount],
    deployment: Deployment,
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    """A field the body does not have is refused by name, never ignored; nothing is journaled."""
    trader = accounts[1]
    position_id = open_position(owner=trader)
    good = signed_body(trader, position_id, sizeDelta="0.1")
    extra = client.post("/api/relay/signed", json={**good, "dryRun": True})
    assert _error(extra) == (422, "invalid_field")
    assert extra.json()["error"]["details"]["field"] == "dryRun"

    signed = raw_tx(chain, trader, deployment.address, calldata.close_position(position_id, units("0.1"), 0))
    unknown = client.post("/api/relay/raw", json={"transaction": signed, "from": trader.address})
    assert _error(unknown) == (422, "invalid_field")
    assert unknown.json()["error"]["details"]["field"] == "from"
    both = client.post("/api/relay/raw", json={"transaction": signed, "rawTransaction": signed})
    assert _error(both) == (422, "invalid_field")
    assert service.list() == []


def test_the_same_signed_request_written_otherwise_is_the_same_idempotent_request(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    """Idempotency compares the request, not its spelling: numbers as JSON numbers or strings, keys in any
    order, are the same call to the vault; another request under the same key is a conflict."""
    trader = accounts[1]
    position_id = open_position(owner=trader)
    body = signed_body(trader, position_id, sizeDelta="0.1")
    key = {"Idempotency-Key": "one-close"}
    first = client.post("/api/relay/signed", json=body, headers=key)
    assert first.status_code == 202, first.text
    respelled = {
        "signature": body["signature"],
        "request": {
            name: int(value) if str(value).isdigit() else value for name, value in body["request"].items()
        },
        "kind": body["kind"],
    }
    assert respelled["request"] != body["request"]  # the JSON differs...
    again = client.post("/api/relay/signed", json=respelled, headers=key)
    assert again.status_code == 200, again.text  # ...the request does not
    assert again.json()["id"] == first.json()["id"]
    other = signed_body(trader, position_id, sizeDelta="0.2")
    assert _error(client.post("/api/relay/signed", json=other, headers=key)) == (409, "idempotency_conflict")


def test_transactions_listing_and_lookup(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    position_id = open_position(owner=accounts[1])
    record_id = client.post("/api/relay/signed", json=signed_body(accounts[1], position_id)).json()["id"]
    settle(service)
    # Listing takes an API key (tests/api/test_reads_scoped.py); here one of the signer's own account.
    app = client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[records_reader] = lambda: ApiKey(
        1, "vrk_test", "", accounts[1].address, frozenset({Scope.READ}), 0, None, None
    )
    listed = client.get("/api/transactions", params={"status": "confirmed"}).json()["transactions"]
    assert [r["id"] for r in listed] == [record_id]
    assert client.get("/api/transactions", params={"status": "queued"}).json()["transactions"] == []
    assert _error(client.get("/api/transactions", params={"status": "bogus"})) == (422, "invalid_field")
    assert _error(client.get("/api/transactions/nope")) == (404, "transaction_not_found")
    json_type = {"content-type": "application/json"}
    malformed = client.post("/api/relay/signed", content=b"{nope", headers=json_type)
    assert _error(malformed) == (422, "invalid_field")


def test_out_of_funds_signer_is_refused_and_reported(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
) -> None:
    broke = Account.create()
    service = make_service(signers=[broke])
    position_id = open_position(owner=accounts[1])
    client = http_client(service)
    owner_body = service.typed_data_for(
        parse_typed_data_query({"kind": "close", "positionId": "0x" + position_id.hex()})
    )
    signature = Account.sign_typed_data(accounts[1].key, full_message=owner_body["typedData"]).signature
    response = client.post(
        "/api/relay/signed",
        json={
            "kind": "close",
            "request": owner_body["typedData"]["message"],
            "signature": "0x" + signature.hex(),
        },
    )
    assert _error(response) == (503, "relayer_out_of_funds")
    assert service.list() == []
    assert service.health()["lowBalance"] is True


def test_idempotency_keys_are_scoped_so_a_client_cannot_squat_the_keepers(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    positions = [open_position(owner=accounts[n]) for n in (1, 2, 3)]
    bodies = [signed_body(accounts[n], pid) for n, pid in zip((1, 2, 3), positions, strict=True)]
    keeper_key = "0x" + positions[0].hex()  # what the keeper would name an order by
    squatted = f"{KEEPER_SCOPE}:{keeper_key}"  # the journal key the keeper's submission ends up under

    # A public client takes both the bare key and the keeper's full journal key...
    for body, key in ((bodies[0], keeper_key), (bodies[1], squatted)):
        response = client.post("/api/relay/signed", json=body, headers={"Idempotency-Key": key})
        assert response.status_code == 202, response.text
    # ...and still blocks nothing: the keeper-scoped submission with that key is a new record.
    keeper = service.submit_signed(
        parse_signed_relay(bodies[2]), idempotency_key=keeper_key, key_scope=KEEPER_SCOPE
    )
    assert keeper.created
    settle(service)
    ids = {record.id for record in service.list()}
    assert len(ids) == 3
    assert service.journal.by_idempotency_key(squatted) == service.get(keeper.record.id)

    # The same key in the same scope still deduplicates, in both scopes.
    again = client.post("/api/relay/signed", json=bodies[0], headers={"Idempotency-Key": keeper_key})
    assert again.status_code == 200
    assert again.json()["id"] != keeper.record.id
    repeat = service.submit_signed(
        parse_signed_relay(bodies[2]), idempotency_key=keeper_key, key_scope=KEEPER_SCOPE
    )
    assert (repeat.created, repeat.record.id) == (False, keeper.record.id)
    assert {record.id for record in service.list()} == ids
