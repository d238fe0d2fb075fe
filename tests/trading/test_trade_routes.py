"""The rest of the REST trading surface: close, take-profit, stop-loss, breakeven, positions, transactions."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from eth_account.signers.local import LocalAccount

from relayer.chain.vault import VaultReader
from relayer.domain import calldata
from relayer.domain.positions import TriggerOrder
from tests.conftest import units, usd
from tests.trading.conftest import Trading


def _pid(position_id: bytes) -> str:
    return "0x" + position_id.hex()


def test_close_position_by_size_then_fully(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    position_id = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    set_market_price("BTCUSDT", "95500")
    key = trading.key(accounts[1])

    part = trading.post(
        "/api/trade/close",
        {"positionId": _pid(position_id), "sizeDelta": "0.3", "allowedPrice": "95000"},
        key,
    )
    assert part.status_code == 200, part.text
    assert part.json()["closed_qty"] == "0.3"
    assert part.json()["remaining_qty"] == "0.7"
    assert part.json()["closed_pct"] == "30"
    assert part.json()["realized_pnl_usd"] == "-150"  # 0.3 x -$500
    assert part.json()["remaining_unrealized_pnl_usd"] == "-350"
    _, sent = calldata.decode_call(trading.relay.get(part.json()["transactionId"]).data)
    assert (sent["sizeDelta"], sent["allowedPrice"]) == (units("0.3"), usd("95000"))
    assert vault.position(position_id).size == units("0.7")

    full = trading.post("/api/trade/close", {"positionId": _pid(position_id)}, key)
    assert full.status_code == 200, full.text
    assert (full.json()["closed_qty"], full.json()["remaining_qty"], full.json()["closed_pct"]) == (
        "0.7",
        "0",
        "100",
    )
    assert vault.position(position_id).size == 0


def test_closed_pct_is_the_exact_share_not_a_truncated_integer(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    # 0.01 of 0.2814 is 3.5536...%: it used to be reported as 3.
    position_id = open_position(market="BTCUSDT", is_long=True, size="0.2814", owner=accounts[1])
    key = trading.key(accounts[1])

    dry = trading.post(
        "/api/trade/close", {"positionId": _pid(position_id), "sizeDelta": "0.01", "dry_run": True}, key
    )
    sent = trading.post("/api/trade/close", {"positionId": _pid(position_id), "sizeDelta": "0.01"}, key)

    assert dry.status_code == 200, dry.text
    assert sent.status_code == 200, sent.text
    assert dry.json()["closed_pct"] == sent.json()["closed_pct"] == "3.553660270078180526"
    assert Decimal(sent.json()["closed_pct"]) == round(Decimal("0.01") / Decimal("0.2814") * 100, 18)


def test_close_more_than_the_position_is_422(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position_id = open_position(owner=accounts[1], size="0.5")

    response = trading.post(
        "/api/trade/close", {"positionId": _pid(position_id), "sizeDelta": "0.6"}, trading.key(accounts[1])
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "size_delta_exceeds_position"
    assert trading.relay.journal.all() == []


def test_take_profit_and_stop_loss_set_replace_and_cancel(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position_id = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    key = trading.key(accounts[1])
    body = {"positionId": _pid(position_id)}

    tp = trading.post("/api/trade/takeprofit", {**body, "price": "99000", "close_pct": 40}, key)
    sl = trading.post("/api/trade/stoploss", {**body, "price": "94000.5"}, key)

    assert tp.status_code == sl.status_code == 200, (tp.text, sl.text)
    assert tp.json()["takeProfit"] == {"price": "99000", "closeBps": 4000}
    assert sl.json()["stopLoss"] == {"price": "94000.5", "closeBps": 10000}
    assert sl.json()["takeProfit"] == {"price": "99000", "closeBps": 4000}
    assert sl.json()["transactionHash"] == trading.relay.get(sl.json()["transactionId"]).mined.tx_hash
    on_chain = vault.position(position_id)
    assert on_chain.take_profit == TriggerOrder(usd("99000"), 4000)
    assert on_chain.stop_loss == TriggerOrder(usd("94000.5"), 10000)

    cancel = trading.post("/api/trade/takeprofit", {**body, "price": "0"}, key)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["takeProfit"] is None
    assert vault.position(position_id).take_profit == TriggerOrder(0, 0)
    assert vault.position(position_id).stop_loss == TriggerOrder(usd("94000.5"), 10000)


@pytest.mark.parametrize(
    ("path", "price"),
    [("/api/trade/takeprofit", "95000"), ("/api/trade/stoploss", "96500"), ("/api/trade/stoploss", "96000")],
)
def test_trigger_on_the_wrong_side_is_422(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount], path: str, price: str
) -> None:
    position_id = open_position(market="BTCUSDT", is_long=True, owner=accounts[1])

    response = trading.post(path, {"positionId": _pid(position_id), "price": price}, trading.key(accounts[1]))

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_trigger_price"
    assert response.json()["error"]["details"]["currentPrice"] == "96000"
    assert trading.relay.journal.all() == []


@pytest.mark.parametrize("close_pct", [0, 101, 12.5])
def test_trigger_close_pct_out_of_range_is_422(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount], close_pct: object
) -> None:
    position_id = open_position(owner=accounts[1])

    response = trading.post(
        "/api/trade/takeprofit",
        {"positionId": _pid(position_id), "price": "99000", "close_pct": close_pct},
        trading.key(accounts[1]),
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "close_pct"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"price": "0", "close_pct": 50}, "invalid_field", "close_pct"),  # a share of a cancelled order
        ({"price": "51922968585348276285304963.29220096"}, "invalid_price", "price"),  # 2**112 units
        ({"price": "99000.000000001"}, "invalid_field", "price"),  # more precise than 8 decimals
    ],
)
def test_trigger_price_rules_are_the_close_requests(
    trading: Trading,
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
    body: dict[str, object],
    code: str,
    field: str,
) -> None:
    position_id = open_position(owner=accounts[1])

    response = trading.post(
        "/api/trade/takeprofit", {"positionId": _pid(position_id), **body}, trading.key(accounts[1])
    )

    assert response.status_code == 422, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["details"]["field"]) == (code, field)
    assert trading.relay.journal.all() == []


def test_move_to_breakeven_in_profit_and_not(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    long_id = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    short_id = open_position(market="ETHUSDT", is_long=False, size="2", owner=accounts[1])
    key = trading.key(accounts[1])

    flat = trading.post("/api/trade/breakeven", {"positionId": _pid(long_id)}, key)
    assert flat.status_code == 422, flat.text
    assert flat.json()["error"]["code"] == "invalid_trigger_price"
    assert "not beyond the entry" in flat.json()["error"]["message"]
    assert flat.json()["error"]["details"] == {"entryPrice": "96000", "currentPrice": "96000"}

    set_market_price("ETHUSDT", "3600")  # the short is losing
    losing = trading.post("/api/trade/breakeven", {"positionId": _pid(short_id)}, key)
    assert losing.status_code == 422
    assert "short" in losing.json()["error"]["message"]
    assert trading.relay.journal.all() == []

    set_market_price("BTCUSDT", "96800")
    moved = trading.post("/api/trade/breakeven", {"positionId": _pid(long_id)}, key)
    assert moved.status_code == 200, moved.text
    assert moved.json()["stopLoss"] == {"price": "96000", "closeBps": 10000}
    assert vault.position(long_id).stop_loss == TriggerOrder(usd("96000"), 10_000)

    set_market_price("ETHUSDT", "3400")
    assert trading.post("/api/trade/breakeven", {"positionId": _pid(short_id)}, key).status_code == 200
    assert vault.position(short_id).stop_loss == TriggerOrder(usd("3500"), 10_000)


def test_get_positions_with_pnl_and_orders(
    trading: Trading,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    btc = open_position(market="BTCUSDT", is_long=True, size="0.42", owner=accounts[1])
    eth = open_position(market="ETHUSDT", is_long=False, size="2", owner=accounts[1])
    open_position(market="BTCUSDT", owner=accounts[2])
    set_market_price("BTCUSDT", "96200")
    key = trading.key(accounts[1])
    assert trading.post(
        "/api/trade/takeprofit", {"positionId": _pid(btc), "price": "99000", "close_pct": 50}, key
    )

    everything = trading.get("/api/trade/positions", key)
    only_eth = trading.get("/api/trade/positions", key, symbol="ethusdt")

    assert everything.status_code == 200
    positions = {p["positionId"]: p for p in everything.json()["positions"]}
    assert set(positions) == {_pid(btc), _pid(eth)}
    assert positions[_pid(btc)]["unrealizedPnl"] == "84"  # 0.42 x $200
    assert positions[_pid(btc)]["takeProfit"] == {"price": "99000", "closeBps": 5000}
    assert positions[_pid(btc)]["stopLoss"] is None
    assert positions[_pid(eth)]["unrealizedPnl"] == "0"
    assert [p["positionId"] for p in only_eth.json()["positions"]] == [_pid(eth)]


def test_get_transaction_own_and_another_accounts(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(owner=accounts[1])
    open_position(owner=accounts[2])
    mine, theirs = trading.key(accounts[1]), trading.key(accounts[2])
    closed = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 10}, mine)
    transaction_id = closed.json()["transactionId"]

    own = trading.get(f"/api/trade/transactions/{transaction_id}", mine)
    other = trading.get(f"/api/trade/transactions/{transaction_id}", theirs)
    unknown = trading.get("/api/trade/transactions/no-such-id", mine)

    assert own.status_code == 200
    assert own.json()["id"] == transaction_id
    assert own.json()["transactionHash"] == closed.json()["transactionHash"]
    assert own.json()["status"] in {"mined", "confirmed"}
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "transaction_not_found"
    assert unknown.status_code == 404


def test_get_transaction_looks_inside_a_multicall_for_the_owner(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    """A relayed multicall (close + take-profit) of trader 2: its key sees it, trader 1's key does not."""
    theirs = open_position(owner=accounts[2], size="1")
    data = calldata.multicall(
        [
            calldata.close_position(theirs, units("0.5"), 0),
            calldata.set_take_profit(theirs, usd("99000"), 10_000),
        ]
    )
    record = trading.relay.submit_call(data).record
    trading.settle()

    stranger = trading.get(f"/api/trade/transactions/{record.id}", trading.key(accounts[1]))
    owner = trading.get(f"/api/trade/transactions/{record.id}", trading.key(accounts[2]))

    assert stranger.status_code == 404, stranger.text
    assert owner.status_code == 200
    assert owner.json()["status"] == "confirmed"
