"""Exit orders by API key (issue 12), REST and MCP: take-profit tiers added one by one (`exit_pct`), a
trailing stop, a whole plan in one call, the plan read back, one order cancelled, an emergency exit, and the
reduce-only rule: the relayer tightens stops but never loosens, cancels or drops one (403
`operator_right_missing`, nothing sent; it acts only under a grant without that right, see
`test_order_change_guards.py`). MCP answers the same JSON as REST."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from relayer.chain.vault import VaultReader
from relayer.constants import RIGHT_CLOSE
from relayer.domain import calldata
from relayer.domain.positions import OrderView
from relayer.faces.cli import keys as keys_cli
from tests.conftest import units, usd
from tests.trading.conftest import Trading, tool_error, tool_json

SEED_TIERS = [
    {"price": "97000", "exit_pct": 25},
    {"price": "98000", "exit_pct": 25},
    {"price": "99000", "exit_pct": 25},
]


def _pid(position_id: bytes) -> str:
    return "0x" + position_id.hex()


def _shape(answer: dict[str, Any]) -> list[tuple[int, str, str, int, int, str]]:
    return [
        (o["orderId"], o["type"], o["price"], o["shareBps"], o["trailBps"], o["expectedQty"])
        for o in answer["orders"]
    ]


def _refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


def test_three_take_profit_calls_with_exit_pct_make_a_ladder_and_a_trailing_stop_takes_the_rest(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    """The issue's complaint: three `set_take_profit` calls each replaced the last. With `exit_pct` each adds
    a tier (REST, MCP, REST, in an order the price does not reach them in), and the stop trails."""
    position = open_position(market="BTCUSDT", is_long=True, size="0.42", owner=accounts[1])
    key, pid = trading.key(accounts[1]), _pid(position)

    first = trading.post("/api/trade/takeprofit", {"positionId": pid, "price": "98000", "exit_pct": 25}, key)
    assert first.status_code == 200, first.text
    tool_json(
        trading.mcp("set_take_profit", {"position_id": pid, "price": "97000", "exit_pct": 25, "api_key": key})
    )
    third = trading.post("/api/trade/takeprofit", {"positionId": pid, "price": "99000", "exit_pct": 25}, key)
    assert third.status_code == 200, third.text
    trail = trading.post("/api/trade/stoploss", {"positionId": pid, "trail_bps": 200}, key)
    assert trail.status_code == 200, trail.text

    assert _shape(trail.json()) == [
        (4, "trailing_stop", "94080", 10_000, 200, "0.105"),  # 2% under 96000; stops first
        (0, "take_profit", "97000", 2_500, 0, "0.105"),
        (1, "take_profit", "98000", 2_500, 0, "0.105"),
        (2, "take_profit", "99000", 2_500, 0, "0.105"),
    ]
    assert trail.json()["planRemainingBps"] == 10_000
    assert trail.json()["stopLoss"] == {"price": "94080", "closeBps": 10_000}
    assert trail.json()["transactionHash"] == trading.relay.get(trail.json()["transactionId"]).mined.tx_hash
    on_chain = vault.orders_of(position)
    assert [o.order_id for o in on_chain.orders] == [4, 0, 1, 2]
    assert on_chain.order(4) == OrderView(4, False, usd("94080"), 10_000, 200, units("0.42"))
    assert on_chain.order(1) == OrderView(1, True, usd("98000"), 2_500, 0, units("0.105"))
    read = trading.get("/api/trade/orders", key, positionId=pid)
    assert read.status_code == 200, read.text
    assert _shape(read.json()) == _shape(trail.json())
    assert read.json() == tool_json(trading.mcp("get_orders", {"symbol": "BTCUSDT", "api_key": key}))

    primary = trading.post(
        "/api/trade/takeprofit", {"positionId": pid, "price": "98500", "close_pct": 10}, key
    )
    _refused(primary, 422, "order_out_of_sequence")  # order 0 (the primary) may not sit beyond order 1
    same = trading.post("/api/trade/takeprofit", {"positionId": pid, "price": "98000", "exit_pct": 10}, key)
    _refused(same, 422, "order_out_of_sequence")  # a tier at that price already: not added twice
    fourth = trading.post("/api/trade/takeprofit", {"positionId": pid, "price": "99500", "exit_pct": 25}, key)
    assert fourth.status_code == 200, fourth.text
    assert [(o["orderId"], o["expectedQty"]) for o in fourth.json()["orders"]] == [
        (4, "0"),  # four quarters leave the stop nothing, unless the price falls first
        (0, "0.105"),
        (1, "0.105"),
        (2, "0.105"),
        (3, "0.105"),
    ]
    fifth = trading.post("/api/trade/takeprofit", {"positionId": pid, "price": "99900", "exit_pct": 1}, key)
    _refused(fifth, 409, "exit_plan_full")
    assert len(trading.relay.journal.all()) == 5  # three tiers, the trailing stop, the fourth tier


def test_a_whole_plan_by_symbol_dry_run_then_sent_and_a_short_numbers_its_tiers_downward(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    long = open_position(market="BTCUSDT", is_long=True, size="0.42", owner=accounts[1])
    short = open_position(market="ETHUSDT", is_long=False, size="2", owner=accounts[1])
    key = trading.key(accounts[1])
    plan = {"symbol": "BTCUSDT", "take_profits": SEED_TIERS, "trailing_stop": {"trail_bps": 200}}

    dry = trading.post("/api/trade/exitplan", {**plan, "dry_run": True}, key)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True
    assert "transactionId" not in dry.json()
    assert [o["expectedQty"] for o in dry.json()["orders"]] == ["0.105"] * 4
    mcp_dry = trading.mcp(
        "set_exit_plan",
        {
            "symbol": "BTCUSDT",
            "take_profits": SEED_TIERS,
            "trailing_stop": {"trail_bps": 200},
            "dry_run": True,
            "api_key": key,
        },
    )
    assert tool_json(mcp_dry) == dry.json()  # the same JSON from both faces
    assert trading.relay.journal.all() == []
    assert vault.orders_of(long).orders == ()

    sent = trading.post("/api/trade/exitplan", plan, key, **{"Idempotency-Key": "plan-1"})
    assert sent.status_code == 200, sent.text
    assert _shape(sent.json()) == _shape(dry.json())
    again = trading.post("/api/trade/exitplan", plan, key, **{"Idempotency-Key": "plan-1"})
    # The first answer (its transaction), marked as a replay: the plan shown is the one now.
    assert again.json() == {**sent.json(), "replayed": True}
    assert "replayed" not in sent.json()
    assert len(trading.relay.journal.all()) == 1
    assert [o.order_id for o in vault.orders_of(long).orders] == [4, 0, 1, 2]

    short_plan = {
        "positionId": _pid(short),
        "take_profits": [
            {"price": "3400", "exit_pct": 30},
            {"price": "3300", "exit_pct": 30},
            {"price": "3450", "exit_pct": 20},
        ],
        "stop_loss": {"price": "3600", "exit_pct": 20},
        "trailing_stop": {"trail_bps": 100},
    }
    shorted = trading.post("/api/trade/exitplan", short_plan, key)
    assert shorted.status_code == 200, shorted.text
    assert [(o["orderId"], o["type"], o["price"], o["shareBps"]) for o in shorted.json()["orders"]] == [
        (4, "stop_loss", "3600", 2_000),
        (5, "trailing_stop", "3535", 10_000),  # 1% above 3500: a short's stop is above the price
        (0, "take_profit", "3450", 2_000),  # the first a falling price reaches
        (1, "take_profit", "3400", 3_000),
        (2, "take_profit", "3300", 3_000),
    ]
    assert vault.orders_of(short).order(5) == OrderView(5, False, usd("3535"), 10_000, 100, units("2"))


def test_the_relayer_tightens_stops_but_never_loosens_cancels_or_drops_one(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    """The relayer refuses, by its own rule and before anything is sent, every change that needs
    loosen_or_cancel_stop (its grant lacks that right, so the vault would revert it: no gas spent on it)."""
    position = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    key, pid = trading.key(accounts[1]), _pid(position)
    first = {"positionId": pid, "take_profits": SEED_TIERS[:1], "stop_loss": {"price": "94000"}}
    assert trading.post("/api/trade/exitplan", first, key).status_code == 200
    sent = len(trading.relay.journal.all())

    cancel_stop = trading.post("/api/trade/orders/cancel", {"positionId": pid, "orderId": 4}, key)
    error = _refused(cancel_stop, 403, "operator_right_missing")
    assert error["details"]["rightName"] == "loosen_or_cancel_stop"
    assert error["details"]["right"] == 8
    assert error["details"]["calldata"] == "0x" + calldata.cancel_order(position, 4).hex()
    assert "never granted" in error["message"]
    assert "POST /api/relay/signed" in error["message"]
    mcp_error = tool_error(trading.mcp("cancel_order", {"position_id": pid, "order_id": 4, "api_key": key}))
    assert mcp_error == error
    refusals: list[tuple[str, dict[str, Any]]] = [
        ("/api/trade/exitplan", {"positionId": pid, "take_profits": SEED_TIERS}),  # drops the stop
        ("/api/trade/exitplan", {"positionId": pid, "stop_loss": {"price": "93000"}}),  # lower: looser
        ("/api/trade/stoploss", {"positionId": pid, "price": "93000"}),
        ("/api/trade/stoploss", {"positionId": pid, "price": "94000", "close_pct": 50}),  # a smaller share
        ("/api/trade/stoploss", {"positionId": pid, "price": "0"}),
    ]
    for path, body in refusals:
        answer = trading.post(path, body, key)
        assert (
            _refused(answer, 403, "operator_right_missing")["details"]["rightName"] == "loosen_or_cancel_stop"
        )
    assert len(trading.relay.journal.all()) == sent  # nothing sent
    assert vault.orders_of(position).order(4) == OrderView(4, False, usd("94000"), 10_000, 0, units("1"))

    tighter = trading.post("/api/trade/stoploss", {"positionId": pid, "price": "95000"}, key)
    assert tighter.status_code == 200, tighter.text
    trailing = trading.post(
        "/api/trade/stoploss", {"positionId": pid, "price": "95000", "trail_bps": 300}, key
    )
    assert trailing.status_code == 200, trailing.text  # a trail added to the same trigger: tighter
    wider = trading.post("/api/trade/stoploss", {"positionId": pid, "price": "95000", "trail_bps": 400}, key)
    _refused(wider, 403, "operator_right_missing")
    cancel_tp = trading.post("/api/trade/orders/cancel", {"positionId": pid, "orderId": 0}, key)
    assert cancel_tp.status_code == 200, cancel_tp.text
    assert [o["orderId"] for o in cancel_tp.json()["orders"]] == [4]
    gone = trading.post("/api/trade/orders/cancel", {"positionId": pid, "orderId": 0}, key)
    assert _refused(gone, 404, "order_not_found")["details"]["orderId"] == 0
    assert vault.orders_of(position).order(4) == OrderView(4, False, usd("95000"), 10_000, 300, units("1"))


def test_order_changes_need_the_rights_they_use_and_say_which(
    make_trading: Callable[..., Trading],
    open_position: Callable[..., bytes],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    accounts: list[LocalAccount],
) -> None:
    trader = accounts[3]
    position = open_position(market="BTCUSDT", is_long=True, size="1", owner=trader)
    trading = make_trading()
    for signer in trading.signers:
        transact(trader, calldata.set_operator_rights(signer.address, RIGHT_CLOSE, 0))
    key, pid = trading.key(trader), _pid(position)

    plan = {"positionId": pid, "take_profits": SEED_TIERS, "stop_loss": {"price": "94000"}}
    error = _refused(trading.post("/api/trade/exitplan", plan, key), 409, "operator_not_approved")
    assert set(error["details"]["reasons"].values()) == {"lacks set_take_profit, tighten_stop"}
    assert error["details"]["right"] == "set_take_profit, tighten_stop"
    stop = trading.post("/api/trade/stoploss", {"positionId": pid, "price": "94000"}, key)
    assert set(_refused(stop, 409, "operator_not_approved")["details"]["reasons"].values()) == {
        "lacks tighten_stop"
    }
    assert trading.relay.journal.all() == []


def test_bad_input_is_422_naming_the_field_and_sends_nothing(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    key, pid = trading.key(accounts[1]), _pid(position)
    tier = {"price": "97000", "exit_pct": 25}
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        (
            "/api/trade/takeprofit",
            {"price": "97000", "exit_pct": 25, "close_pct": 25},
            "invalid_field",
            "exit_pct",
        ),
        ("/api/trade/takeprofit", {"price": "97000", "exit_pct": 101}, "invalid_field", "exit_pct"),
        ("/api/trade/takeprofit", {"price": "0", "exit_pct": 25}, "invalid_field", "price"),
        ("/api/trade/stoploss", {"trail_bps": 10_000}, "invalid_field", "trail_bps"),
        ("/api/trade/stoploss", {"trail_bps": 0}, "invalid_field", "trail_bps"),
        ("/api/trade/stoploss", {"close_pct": 50}, "invalid_field", "price"),
        ("/api/trade/stoploss", {"price": "95000", "exit_pct": 50}, "invalid_field", "exit_pct"),
        ("/api/trade/exitplan", {"take_profits": [tier] * 5}, "invalid_field", "take_profits"),
        (
            "/api/trade/exitplan",
            {"take_profits": [{"price": "97000"}]},
            "invalid_field",
            "take_profits[0].exit_pct",
        ),
        (
            "/api/trade/exitplan",
            {"take_profits": [tier, {**tier, "pct": 1}]},
            "invalid_field",
            "take_profits[1].pct",
        ),
        ("/api/trade/exitplan", {"take_profits": tier}, "invalid_field", "take_profits"),
        ("/api/trade/exitplan", {"stop_loss": {"exit_pct": 50}}, "invalid_field", "stop_loss.price"),
        (
            "/api/trade/exitplan",
            {"trailing_stop": {"price": "94000"}},
            "invalid_field",
            "trailing_stop.trail_bps",
        ),
        ("/api/trade/exitplan", {}, "invalid_field", "take_profits"),
        ("/api/trade/orders/cancel", {"orderId": 6}, "invalid_field", "orderId"),
        ("/api/trade/orders/cancel", {}, "invalid_field", "orderId"),
    ]
    for path, body, code, field in cases:
        error = _refused(trading.post(path, {"positionId": pid, **body}, key), 422, code)
        assert error["details"]["field"] == field, (path, body, error)
    plan_checks: list[tuple[dict[str, Any], str]] = [
        (
            {"take_profits": [{**tier, "exit_pct": 60}, {"price": "98000", "exit_pct": 60}]},
            "plan_shares_exceeded",
        ),
        (
            {"take_profits": [{"price": "95000", "exit_pct": 25}]},
            "invalid_trigger_price",
        ),  # below a long's price
        ({"take_profits": [tier, tier]}, "order_out_of_sequence"),
        ({"trailing_stop": {"trail_bps": 200, "price": "97000"}}, "invalid_trigger_price"),
    ]
    for body, code in plan_checks:
        _refused(trading.post("/api/trade/exitplan", {"positionId": pid, **body}, key), 422, code)
    unknown = trading.get("/api/trade/orders", key)
    assert _refused(unknown, 422, "invalid_field")["details"]["field"] == "positionId"

    mcp_cases: list[tuple[str, dict[str, Any], str]] = [
        ("cancel_order", {"position_id": pid, "order_id": 9}, "order_id"),
        (
            "set_exit_plan",
            {"position_id": pid, "take_profits": [{"price": "97000", "exit_pct": "25"}]},
            "take_profits[0].exit_pct",
        ),
        ("set_exit_plan", {"position_id": pid, "take_profits": [{**tier, "pct": 1}]}, "take_profits[0].pct"),
        (
            "set_exit_plan",
            {"position_id": pid, "trailing_stop": {"price": "94000"}},
            "trailing_stop.trail_bps",
        ),
        ("set_exit_plan", {"position_id": pid, "take_profits": [tier] * 5}, "take_profits"),
        ("set_take_profit", {"position_id": pid, "price": "97000", "exit_pct": 0}, "exit_pct"),
        ("set_stop_loss", {"position_id": pid, "trail_bps": 10_000}, "trail_bps"),
        ("get_orders", {}, "position_id"),
    ]
    for tool, arguments, argument in mcp_cases:
        error = tool_error(trading.mcp(tool, {**arguments, "api_key": key}))
        assert (error["code"], error["details"]["field"]) == ("invalid_field", argument), (tool, error)
    assert trading.relay.journal.all() == []


def test_emergency_exit_closes_one_market_then_everything_in_one_transaction_each(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    btc = open_position(market="BTCUSDT", is_long=True, size="0.42", owner=accounts[1])
    eth = open_position(market="ETHUSDT", is_long=False, size="2", owner=accounts[1])
    theirs = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[2])
    key = trading.key(accounts[1])

    dry = trading.post("/api/trade/emergencyexit", {"dry_run": True}, key)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True
    assert {(f["positionId"], f["closed_qty"]) for f in dry.json()["fills"]} == {
        (_pid(btc), "0.42"),
        (_pid(eth), "2"),
    }
    assert trading.relay.journal.all() == []

    one = tool_json(trading.mcp("emergency_exit", {"symbol": "ethusdt", "api_key": key}))
    assert (one["symbol"], one["account"]) == ("ETHUSDT", accounts[1].address)
    assert [
        (f["positionId"], f["symbol"], f["side"], f["closed_qty"], f["remaining_qty"], f["exit_price"])
        for f in one["fills"]
    ] == [(_pid(eth), "ETHUSDT", "short", "2", "0", "3500")]
    assert vault.position(eth).size == 0
    assert vault.position(btc).size == units("0.42")

    everything = trading.post("/api/trade/emergencyexit", {}, key, **{"Idempotency-Key": "out"})
    assert everything.status_code == 200, everything.text
    (fill,) = everything.json()["fills"]
    assert (fill["positionId"], fill["closed_qty"], fill["realized_pnl_usd"]) == (_pid(btc), "0.42", "0")
    assert fill["transactionHash"] == everything.json()["transactionHash"]
    replay = trading.post("/api/trade/emergencyexit", {}, key, **{"Idempotency-Key": "out"})
    assert replay.json() == everything.json()
    assert len(trading.relay.journal.all()) == 2
    record = trading.get(f"/api/trade/transactions/{everything.json()['transactionId']}", key)
    assert record.status_code == 200, record.text
    other = trading.get(
        f"/api/trade/transactions/{everything.json()['transactionId']}", trading.key(accounts[2])
    )
    _refused(other, 404, "transaction_not_found")

    _refused(trading.post("/api/trade/emergencyexit", {}, key), 404, "position_not_found")
    assert vault.position(theirs).size == units("1")
    eth_only, _ = keys_cli.create_key(
        trading.runtime.keys, account=accounts[2].address, scopes="read,trade", markets="ETHUSDT"
    )
    refused = _refused(trading.post("/api/trade/emergencyexit", {}, eth_only), 403, "market_not_allowed")
    assert refused["details"]["allowed"] == ["ETHUSDT"]
    assert vault.position(theirs).size == units("1")


def test_get_orders_needs_only_read_and_only_the_accounts_own(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    mine = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    theirs = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[2])
    read_only = trading.key(accounts[1], "read")

    empty = trading.get("/api/trade/orders", read_only, symbol="BTCUSDT")
    assert empty.status_code == 200, empty.text
    assert (empty.json()["positionId"], empty.json()["orders"], empty.json()["planRemainingBps"]) == (
        _pid(mine),
        [],
        10_000,
    )
    _refused(trading.get("/api/trade/orders", read_only, positionId=_pid(theirs)), 403, "not_authorized")
    error = tool_error(trading.mcp("get_orders", {"position_id": _pid(theirs), "api_key": read_only}))
    assert error["code"] == "not_authorized"
    scope = trading.post(
        "/api/trade/exitplan", {"positionId": _pid(mine), "take_profits": SEED_TIERS}, read_only
    )
    _refused(scope, 403, "insufficient_scope")
