"""Webhooks end to end: API-key trading on the real app, deliveries to a real local receiver, verified with
the `standardwebhooks` package; retries, hangs, failures, isolation, SSRF rules, secrets out of logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from relayer.config import WebhookSettings
from tests.trading.conftest import Trading
from tests.webhooks.conftest import HANG, Received, Receiver

FAST = {"allow_private_urls": True, "poll_interval_s": 0.05, "backoff_base_s": 0.3, "backoff_max_s": 1.0}
"""A local receiver (loopback, so private URLs allowed), quick polls and retries."""


def _app(make_trading: Callable[..., Trading], **webhooks: Any) -> Trading:
    return make_trading(webhooks=WebhookSettings(**{**FAST, **webhooks}))


def _subscribe(trading: Trading, key: str, url: str, **body: Any) -> dict[str, Any]:
    response = trading.post("/api/webhooks", {"url": url, **body}, key)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    assert answer["secret"].startswith("whsec_")
    return answer


def _of_type(received: list[Received], kind: str) -> list[dict[str, Any]]:
    return [item.json for item in received if item.json["type"] == kind]


def _statuses(received: list[Received], record_id: str) -> list[str]:
    return [
        body["data"]["status"]
        for body in _of_type(received, "transaction.status")
        if body["data"]["transactionId"] == record_id
    ]


def test_a_partial_close_is_told_signed_with_the_fill_of_the_trading_answer(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    receiver: Receiver,
) -> None:
    trader = accounts[1]
    approve_operators(trader)
    trading = _app(make_trading)
    open_position(market="BTCUSDT", is_long=True, size="0.42", owner=trader)
    set_market_price("BTCUSDT", "96200")
    key = trading.key(trader)
    hook = _subscribe(trading, key, receiver.url("/mine"))
    everything = _subscribe(
        trading, trading.key(accounts[4], "read,admin"), receiver.url("/all"), **{"global": True}
    )

    answer = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 33}, key).json()
    assert answer["success"] is True, answer
    record_id = answer["transactionId"]

    got = receiver.wait_for("/mine", lambda r: len(_of_type(r, "position.decreased")) == 1)
    got = receiver.wait_for("/mine", lambda r: "mined" in _statuses(r, record_id))
    for item in got:  # every delivery verifies with an independent Standard Webhooks implementation
        assert item.verified(hook["secret"]) == item.json
        assert item.headers["webhook-id"] == item.json["id"]
    (fill,) = _of_type(got, "position.decreased")
    data = fill["data"]
    assert (data["closed_qty"], data["remaining_qty"], data["exit_price"], data["realized_pnl_usd"]) == (
        answer["closed_qty"],
        answer["remaining_qty"],
        answer["exit_price"],
        answer["realized_pnl_usd"],
    )
    assert data["transactionId"] == record_id
    assert data["transactionHash"] == answer["transactionHash"]
    assert _statuses(got, record_id)[:2] == ["queued", "submitted"] or _statuses(got, record_id)[0] in {
        "queued",
        "submitted",
    }
    assert fill["chainId"] == trading.runtime.client.chain_id
    # The operator's global subscription hears the same notices, signed with its own secret.
    seen = receiver.wait_for("/all", lambda r: len(_of_type(r, "position.decreased")) == 1)
    assert all(item.verified(everything["secret"]) == item.json for item in seen)
    assert {item.json["id"] for item in seen} >= {fill["id"]}


def test_a_receiver_answering_500_gets_the_same_message_again_after_the_backoff(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    receiver: Receiver,
) -> None:
    trader = accounts[1]
    approve_operators(trader)
    trading = _app(make_trading)
    open_position(market="BTCUSDT", is_long=True, size="0.42", owner=trader)
    key = trading.key(trader)
    hook = _subscribe(trading, key, receiver.url("/flaky"), types=["position.decreased"])
    receiver.script("/flaky", 500)

    trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 50}, key)

    first, second = receiver.wait_for("/flaky", lambda r: len(r) >= 2)[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    assert second.at - first.at >= 0.3 * 0.9  # backoff_base_s less at most the jitter
    assert second.verified(hook["secret"])["type"] == "position.decreased"
    deliveries = trading.get(f"/api/webhooks/{hook['id']}/deliveries", key).json()["deliveries"]
    (delivery,) = deliveries
    assert (delivery["state"], delivery["attempts"], delivery["lastStatus"]) == ("delivered", 2, 200)


def test_a_hanging_receiver_delays_neither_the_relay_nor_other_subscriptions(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    receiver: Receiver,
) -> None:
    trader = accounts[1]
    approve_operators(trader)
    # The account's share (half of concurrency) is above what one subscription may hold.
    trading = _app(make_trading, timeout_s=20.0, concurrency=4, per_webhook_in_flight=1)
    open_position(market="BTCUSDT", is_long=True, size="0.42", owner=trader)
    key = trading.key(trader)
    _subscribe(trading, key, receiver.url("/hangs"))
    _subscribe(trading, key, receiver.url("/fine"))
    receiver.script("/hangs", *([HANG] * 50))

    started = time.time()
    answer = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 50}, key).json()
    answered_s = time.time() - started

    assert answer["success"] is True
    assert answered_s < 5.0
    fine = receiver.wait_for("/fine", lambda r: len(_of_type(r, "position.decreased")) == 1, timeout_s=10)
    assert len(receiver.at("/hangs")) == 1  # one in flight to it, held; the others wait their turn
    assert fine[-1].at - started < 10.0
    receiver.release()


def test_after_max_attempts_the_delivery_is_failed(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    receiver: Receiver,
) -> None:
    trader = accounts[1]
    approve_operators(trader)
    trading = _app(make_trading, max_attempts=3, backoff_base_s=0.1)
    open_position(market="BTCUSDT", is_long=True, size="0.42", owner=trader)
    key = trading.key(trader)
    hook = _subscribe(trading, key, receiver.url("/down"), types=["position.decreased"])
    receiver.script("/down", *([503] * 10))

    trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 50}, key)

    receiver.wait_for("/down", lambda r: len(r) >= 3)
    deadline = time.monotonic() + 10
    while True:
        (delivery,) = trading.get(f"/api/webhooks/{hook['id']}/deliveries", key).json()["deliveries"]
        if delivery["state"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (delivery["state"], delivery["attempts"], delivery["lastStatus"]) == ("failed", 3, 503)
    time.sleep(0.5)
    assert len(receiver.at("/down")) == 3  # and never again


def test_accounts_are_isolated_and_secrets_stay_out_of_logs(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    one, two = accounts[1], accounts[2]
    approve_operators(one)
    approve_operators(two)
    trading = _app(make_trading)
    open_position(market="BTCUSDT", is_long=True, size="0.42", owner=one)
    open_position(market="BTCUSDT", is_long=True, size="0.2", owner=two)
    key_one, key_two = trading.key(one), trading.key(two)
    hook_one = _subscribe(trading, key_one, receiver.url("/one"))
    hook_two = _subscribe(trading, key_two, receiver.url("/two"))

    # A key sees and manages only its own account's subscriptions.
    listed = trading.get("/api/webhooks", key_two).json()["webhooks"]
    assert [hook["id"] for hook in listed] == [hook_two["id"]]
    assert "secret" not in listed[0]
    gone = trading.client.delete(
        f"/api/webhooks/{hook_one['id']}", headers={"authorization": f"Bearer {key_two}"}
    )
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "webhook_not_found")
    other = trading.get(f"/api/webhooks/{hook_one['id']}/deliveries", key_two)
    assert other.status_code == 404
    refused = trading.post("/api/webhooks", {"url": receiver.url("/x"), "account": one.address}, key_two)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "insufficient_scope")
    refused = trading.post("/api/webhooks", {"url": receiver.url("/x"), "global": True}, key_two)
    assert refused.status_code == 403

    answer = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 50}, key_one).json()
    receiver.wait_for("/one", lambda r: len(_of_type(r, "position.decreased")) == 1)
    time.sleep(0.5)  # what would have reached /two by now
    assert receiver.at("/two") == []
    assert all(
        item.json["data"].get("transactionId") == answer["transactionId"] for item in receiver.at("/one")
    )

    text = caplog.text
    assert hook_one["secret"] not in text
    assert hook_two["secret"] not in text
    assert hook_one["secret"].removeprefix("whsec_") not in text
    assert key_one not in text
    assert key_two not in text


def test_private_urls_are_refused_unless_allowed(
    make_trading: Callable[..., Trading], accounts: list[LocalAccount], receiver: Receiver
) -> None:
    trading = make_trading(webhooks=WebhookSettings())
    key = trading.key(accounts[1])
    for url in (
        receiver.url("/x"),
        "http://localhost:8080/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9000/",
        "http://user:pw@example.com/",
        "ftp://example.com/",
        "http://" + "a" * 2100 + ".com/",
    ):
        response = trading.post("/api/webhooks", {"url": url}, key)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "webhook_url_refused"), url
    accepted = trading.post("/api/webhooks", {"url": "https://hooks.example.com/relayer"}, key)
    assert accepted.status_code == 201, accepted.text


def test_the_limit_per_account_and_removal(
    make_trading: Callable[..., Trading], accounts: list[LocalAccount], receiver: Receiver
) -> None:
    trading = _app(make_trading, max_per_account=2)
    key = trading.key(accounts[1])
    first = _subscribe(trading, key, receiver.url("/a"))
    _subscribe(trading, key, receiver.url("/b"))
    third = trading.post("/api/webhooks", {"url": receiver.url("/c")}, key)
    assert (third.status_code, third.json()["error"]["code"]) == (409, "too_many_webhooks")
    read_only = trading.key(accounts[1], "read")
    anonymous = trading.post("/api/webhooks", {"url": "ftp://x", "bogus": 1}, None)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthenticated")
    assert trading.post("/api/webhooks", {"url": receiver.url("/c")}, read_only).status_code == 403
    assert len(trading.get("/api/webhooks", read_only).json()["webhooks"]) == 2

    gone = trading.client.delete(f"/api/webhooks/{first['id']}", headers={"authorization": f"Bearer {key}"})
    assert gone.status_code == 204
    assert len(trading.get("/api/webhooks", key).json()["webhooks"]) == 1
    assert trading.post("/api/webhooks", {"url": receiver.url("/c")}, key).status_code == 201


def test_the_test_message_is_signed_and_answers_the_receivers_status(
    make_trading: Callable[..., Trading], accounts: list[LocalAccount], receiver: Receiver
) -> None:
    trading = _app(make_trading)
    key = trading.key(accounts[1])
    hook = _subscribe(trading, key, receiver.url("/t"))
    receiver.script("/t", 418)

    teapot = trading.post(f"/api/webhooks/{hook['id']}/test", {}, key).json()
    fine = trading.post(f"/api/webhooks/{hook['id']}/test", {}, key).json()

    assert (teapot["delivered"], teapot["status"]) == (False, 418)
    assert (fine["delivered"], fine["status"], fine["error"]) == (True, 200, None)
    first, second = receiver.at("/t")
    assert first.verified(hook["secret"])["type"] == "webhook.test"
    assert second.json["data"] == {"webhookId": hook["id"]}
    assert first.headers["webhook-id"] != second.headers["webhook-id"]


def test_this_instances_notices_are_delivered_at_once_not_at_the_next_poll(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    receiver: Receiver,
) -> None:
    trader = accounts[1]
    approve_operators(trader)
    trading = _app(make_trading, poll_interval_s=30.0)  # only the journal's hook can be this quick
    open_position(market="BTCUSDT", is_long=True, size="0.42", owner=trader)
    key = trading.key(trader)
    _subscribe(trading, key, receiver.url("/now"), types=["position.decreased"])

    started = time.time()
    trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 50}, key)

    (fill,) = receiver.wait_for("/now", lambda r: len(r) == 1, timeout_s=10)
    assert fill.at - started < 5.0


def test_with_webhooks_disabled_the_relay_still_prunes_notices(make_trading: Callable[..., Trading]) -> None:
    trading = _app(make_trading, enabled=False)
    webhooks = trading.runtime.webhooks
    assert webhooks is not None
    assert webhooks.running == "notices-prune"  # not the dispatcher, but the notices table stays bounded
