"""Prometheus metrics of a real app: relayed transactions move the counters and histograms, no label names a
user or a record, `GET /metrics` is guarded (the token or an `admin` key), off means off, and the metrics port
serves without authentication while the app runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from web3.types import TxReceipt

from relayer.config import MetricsSettings
from relayer.domain import calldata
from relayer.domain.sponsorship import Policy
from relayer.services.metrics import CONTENT_TYPE_LATEST, NO_METRICS
from tests.conftest import usd
from tests.trading.conftest import Trading

TOKEN = "scrape-me-0123456789"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(trading: Trading, **headers: str) -> Any:
    return trading.client.get("/metrics", headers=headers)


def parse(text: str) -> Samples:
    """Every sample by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def signed_trigger(trading: Trading, owner: LocalAccount, position_id: bytes, price: str) -> dict[str, Any]:
    """A take-profit request signed by `owner` (deadline and nonce filled in by the relayer)."""
    typed = trading.client.get(
        "/api/relay/typed-data",
        params={
            "kind": "trigger",
            "positionId": "0x" + position_id.hex(),
            "isTakeProfit": "true",
            "price": price,
            "closeBps": "5000",
        },
    )
    assert typed.status_code == 200, typed.text
    signature = Account.sign_typed_data(owner.key, full_message=typed.json()["typedData"]).signature
    return {
        "kind": "trigger",
        "request": typed.json()["typedData"]["message"],
        "signature": "0x" + signature.hex(),
    }


@pytest.mark.only_store("sqlite")
def test_relayed_transactions_move_the_counters_and_no_label_names_a_user_or_a_record(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
) -> None:
    owner = accounts[1]
    approve_operators(owner)
    trading = make_trading(metrics=MetricsSettings(token=SecretStr(TOKEN)))
    set_market_price("BTCUSDT", "100000")
    position_id = open_position(market="BTCUSDT", size="1", owner=owner)
    key = trading.key(owner)

    closed = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 10}, key)  # API-key trading
    assert closed.status_code == 200, closed.text
    trading.settle()
    relayed = trading.post("/api/relay/signed", signed_trigger(trading, owner, position_id, "101000"), None)
    assert relayed.status_code == 202, relayed.text
    trading.settle()
    transact(owner, calldata.set_stop_loss(position_id, usd("95000"), 10_000))  # the keeper's order
    set_market_price("BTCUSDT", "94000")
    executions = trading.keeper.tick()
    assert len(executions) == 1
    trading.settle()
    trading.relay.inner.policy = Policy(signed_daily_cap_wei=1)  # the signed requests' share is spent
    refused = trading.post("/api/relay/signed", signed_trigger(trading, owner, position_id, "102000"), None)
    assert refused.status_code == 429, refused.text
    assert trading.relay.tick() == 0  # a round with nothing unfinished: the queue gauges read 0

    response = scrape(trading, Authorization=f"Bearer {TOKEN}")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = parse(response.text)
    for kind in ("close", "trigger", "execute"):
        assert value(samples, "relayer_transactions_total", kind=kind, status="confirmed") == 1
    assert (
        value(samples, "relayer_stage_seconds_count", stage="simulate") >= 2
    )  # the signed one, the keeper's
    for stage in ("journal", "broadcast", "mined", "confirmed"):
        assert value(samples, "relayer_stage_seconds_count", stage=stage) >= 3, stage
    assert value(samples, "relayer_stage_seconds_count", stage="confirmed") == 3
    assert value(samples, "relayer_node_request_seconds_count", method="eth_sendRawTransaction") >= 3
    assert value(samples, "relayer_node_request_seconds_count", method="eth_estimateGas") >= 2
    assert value(samples, "relayer_keeper_orders_seen_total", side="sl") >= 1
    assert value(samples, "relayer_keeper_orders_executed_total", side="sl") == 1
    assert value(samples, "relayer_keeper_orders_retried_total", side="sl") == 0
    assert value(samples, "relayer_quota_rejections_total", scope="signed") == 1
    http = "relayer_http_requests_total"
    assert value(samples, http, route="/api/partialclose", method="POST", status="200") == 1
    assert value(samples, http, route="/api/relay/signed", method="POST", status="202") == 1
    assert value(samples, http, route="/api/relay/signed", method="POST", status="429") == 1
    assert value(samples, http, route="/api/relay/typed-data", method="GET", status="200") == 2
    signers = {signer.address for signer in trading.signers}
    for signer in signers:
        assert value(samples, "relayer_signer_balance_wei", signer=signer) > 0
        assert ("relayer_signer_low_balance", frozenset({("signer", signer)})) in samples
        assert value(samples, "relayer_signer_low_balance", signer=signer) == 0
    for label in (*signers, "raw"):
        assert ("relayer_queue_depth", frozenset({("signer", label)})) in samples
        assert value(samples, "relayer_queue_depth", signer=label) == 0
        assert value(samples, "relayer_in_flight", signer=label) == 0
    # Bounded labels: no user address, position id, record id or API key anywhere.
    users = {account.address.lower() for account in accounts if account.address not in signers}
    records = trading.relay.journal.all()
    forbidden = users | {"0x" + position_id.hex()} | {record.id for record in records}
    forbidden.add(key)
    assert len(records) == 3
    label_values = {v.lower() for _, labels in samples for _, v in labels}
    assert not any(bad.lower() in text for bad in forbidden for text in label_values)


@pytest.mark.only_store("sqlite")
@pytest.mark.only_backend("eth-tester")
def test_metrics_take_the_token_or_an_admin_key(
    make_trading: Callable[..., Trading], accounts: list[LocalAccount]
) -> None:
    trading = make_trading(metrics=MetricsSettings(token=SecretStr(TOKEN)))
    admin = trading.key(accounts[1], "read,admin")
    reader = trading.key(accounts[1], "read")

    anonymous = scrape(trading)
    wrong = scrape(trading, Authorization="Bearer not-the-token")
    read_only = scrape(trading, Authorization=f"Bearer {reader}")
    token_as_key = scrape(trading, **{"X-API-Key": TOKEN})  # the token is a bearer, not an API key
    by_token = scrape(trading, Authorization=f"Bearer {TOKEN}")
    by_admin = scrape(trading, Authorization=f"Bearer {admin}")

    assert anonymous.status_code == wrong.status_code == token_as_key.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    assert read_only.status_code == 403
    assert read_only.json()["error"]["code"] == "insufficient_scope"
    assert by_token.status_code == by_admin.status_code == 200
    assert "relayer_http_requests_total" in by_admin.text
    samples = parse(by_admin.text)
    assert value(samples, "relayer_http_requests_total", route="/metrics", method="GET", status="401") == 3
    assert value(samples, "relayer_http_requests_total", route="/metrics", method="GET", status="403") == 1
    assert trading.client.get("/no/such/path").status_code == 404
    again = parse(scrape(trading, Authorization=f"Bearer {TOKEN}").text)
    assert value(again, "relayer_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not any("/no/such/path" in v for _, labels in again for _, v in labels)


@pytest.mark.only_store("sqlite")
@pytest.mark.only_backend("eth-tester")
def test_metrics_off_collect_nothing_and_answer_404(
    make_trading: Callable[..., Trading], accounts: list[LocalAccount]
) -> None:
    trading = make_trading(metrics=MetricsSettings(enabled=False, token=SecretStr(TOKEN)))
    admin = trading.key(accounts[1], "read,admin")

    response = scrape(trading, Authorization=f"Bearer {admin}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert trading.runtime.metrics is NO_METRICS
    assert trading.runtime.client.metrics is NO_METRICS
    assert trading.relay.inner.sender.metrics is NO_METRICS
    assert "/metrics" not in trading.client.get("/openapi.json").json()["paths"]


@pytest.mark.only_store("sqlite")
@pytest.mark.only_backend("eth-tester")
def test_the_metrics_port_serves_without_authentication_while_the_app_runs(
    make_trading: Callable[..., Trading],
) -> None:
    trading = make_trading(metrics=MetricsSettings(port=0))
    port = trading.app.state.metrics_port
    assert isinstance(port, int)
    assert port > 0

    served = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    other = httpx.get(f"http://127.0.0.1:{port}/api/transactions", timeout=10)
    guarded = scrape(trading)  # the API port still asks for credentials

    assert served.status_code == 200
    assert served.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = parse(served.text)
    assert any(name == "relayer_signer_balance_wei" for name, _ in samples)
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    assert guarded.status_code == 401
    trading.client.__exit__(None, None, None)  # the lifespan ends: the port closes with it
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
