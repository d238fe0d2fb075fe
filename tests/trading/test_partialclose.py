"""POST /api/partialclose end to end: the seed conversation, dry run, exit_pct, slippage, the 202 path."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from relayer.chain.vault import VaultReader
from relayer.constants import CLOSE_ALL_SIZE, OPERATOR_CHECK_GAS, PNL_DECIMALS
from relayer.domain import calldata
from relayer.domain.positions import realized_pnl_e8
from relayer.domain.requests import CloseRequest
from relayer.domain.units import format_fixed
from tests.conftest import units, usd
from tests.trading.conftest import Mining, Trading, tool_json


def _decreased(vault: VaultReader, tx_hash: str) -> dict[str, Any]:
    """The PositionDecreased event of a mined transaction, read from the chain's own receipt."""
    receipt = vault.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    (event,) = vault.contract.events.PositionDecreased().process_receipt(receipt)
    return dict(event["args"])


def _seed_position(
    open_position: Callable[..., bytes], set_market_price: Callable[[str, str], None], trader: LocalAccount
) -> bytes:
    """The seed conversation's setup: a 0.42 BTC long opened at 96000, then the price moves to 96200."""
    position_id = open_position(market="BTCUSDT", is_long=True, size="0.42", owner=trader)
    set_market_price("BTCUSDT", "96200")
    return position_id


def test_seed_conversation_33_percent_off_a_btc_long(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    trader = accounts[1]
    position_id = _seed_position(open_position, set_market_price, trader)
    key = trading.key(trader)

    response = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 33}, key)

    assert response.status_code == 200, response.text
    answer = response.json()
    event = _decreased(vault, answer["transactionHash"])
    assert answer["success"] is True
    assert answer["symbol"] == "BTCUSDT"
    assert answer["positionId"] == "0x" + position_id.hex()
    assert answer["closed_pct"] == "33"
    assert answer["closed_qty"] == "0.1386"
    assert answer["remaining_qty"] == "0.2814"
    assert answer["exit_price"] == "96200"
    assert event["sizeDelta"] == units("0.1386")
    assert event["remainingSize"] == units("0.2814")
    assert event["exitPrice"] == usd("96200")
    # 0.1386 BTC x $200 = $27.72 booked; 0.2814 BTC x $200 = $56.28 still open, exactly as the chain says
    assert answer["realized_pnl_usd"] == format_fixed(event["realizedPnl"], PNL_DECIMALS) == "27.72"
    remaining_pnl = realized_pnl_e8(True, usd("96000"), event["exitPrice"], event["remainingSize"])
    assert answer["remaining_unrealized_pnl_usd"] == format_fixed(remaining_pnl, PNL_DECIMALS) == "56.28"
    assert Decimal(answer["closed_qty"]) + Decimal(answer["remaining_qty"]) == Decimal("0.42")
    position = vault.position(position_id)
    assert position.size == units(answer["remaining_qty"])
    record = trading.relay.get(answer["transactionId"])
    assert record.sender in {s.address for s in trading.signers}  # the relayer sent it, not the trader
    assert record.account == trader.address  # ... for the key's account, which the record keeps


def test_seed_conversation_over_mcp_matches_rest(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    """The same conversation twice from the same state: REST for trader 1, the MCP tool for trader 2."""
    second = open_position(market="BTCUSDT", is_long=True, size="0.42", owner=accounts[2])
    first = _seed_position(open_position, set_market_price, accounts[1])
    rest = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 33}, trading.key(accounts[1]))
    assert rest.status_code == 200, rest.text

    result = trading.mcp(
        "partial_close", {"symbol": "BTCUSDT", "exit_pct": 33, "api_key": trading.key(accounts[2])}
    )

    answer = tool_json(result)
    event = _decreased(vault, answer["transactionHash"])
    assert answer["positionId"] == "0x" + second.hex() != "0x" + first.hex()
    assert answer["closed_qty"] == format_fixed(event["sizeDelta"], 18) == "0.1386"
    assert answer["remaining_qty"] == "0.2814"
    assert answer["realized_pnl_usd"] == format_fixed(event["realizedPnl"], PNL_DECIMALS)
    same = (
        "success",
        "symbol",
        "closed_pct",
        "closed_qty",
        "remaining_qty",
        "exit_price",
        "realized_pnl_usd",
    )
    assert {k: answer[k] for k in same} == {k: rest.json()[k] for k in same}
    assert answer["remaining_unrealized_pnl_usd"] == rest.json()["remaining_unrealized_pnl_usd"]
    assert vault.position(second).size == units("0.2814")


def _sent_close(trading: Trading, transaction_id: str) -> dict[str, Any]:
    """The closePosition arguments the relayer journaled (and sent) for a record."""
    name, args = calldata.decode_call(trading.relay.get(transaction_id).data)
    assert name == "closePosition"
    return args


def test_dry_run_answers_the_same_numbers_and_sends_nothing(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    position_id = _seed_position(open_position, set_market_price, accounts[1])
    key = trading.key(accounts[1])
    block = vault.w3.eth.block_number

    dry = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 33, "dry_run": True}, key)

    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True
    assert dry.json()["transactionHash"] is None
    assert trading.relay.journal.all() == []
    assert vault.w3.eth.block_number == block
    assert vault.position(position_id).size == units("0.42")

    real = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 33}, key)
    assert real.status_code == 200, real.text
    numbers = (
        "symbol",
        "side",
        "closed_pct",
        "closed_qty",
        "remaining_qty",
        "exit_price",
        "realized_pnl_usd",
        "remaining_unrealized_pnl_usd",
        "positionId",
    )
    assert {k: dry.json()[k] for k in numbers} == {k: real.json()[k] for k in numbers}


def test_exit_pct_defaults_to_50(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
) -> None:
    position_id = open_position(market="ETHUSDT", is_long=False, size="3", owner=accounts[1])

    response = trading.post("/api/partialclose", {"symbol": "ethusdt"}, trading.key(accounts[1]))

    assert response.status_code == 200, response.text
    assert response.json()["closed_pct"] == "50"
    assert response.json()["closed_qty"] == "1.5"
    assert response.json()["side"] == "short"
    assert vault.position(position_id).size == units("1.5")
    assert _sent_close(trading, response.json()["transactionId"])["sizeDelta"] == units("1.5")


def test_exit_pct_100_uses_the_close_all_sentinel(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    position_id = _seed_position(open_position, set_market_price, accounts[1])

    response = trading.post(
        "/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 100}, trading.key(accounts[1])
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["closed_qty"], answer["remaining_qty"], answer["remaining_unrealized_pnl_usd"]) == (
        "0.42",
        "0",
        "0",
    )
    assert answer["realized_pnl_usd"] == "84"  # 0.42 x $200
    assert _sent_close(trading, answer["transactionId"])["sizeDelta"] == CLOSE_ALL_SIZE
    assert vault.position(position_id).size == 0


@pytest.mark.parametrize("exit_pct", [0, 101, -5, 33.5, "33.5", "a third", True, None, [33]])
def test_exit_pct_out_of_range_or_not_an_integer_is_422(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount], exit_pct: object
) -> None:
    open_position(owner=accounts[1])

    response = trading.post(
        "/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": exit_pct}, trading.key(accounts[1])
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_field"
    assert response.json()["error"]["details"]["field"] == "exit_pct"
    assert trading.relay.journal.all() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "symbol"),
        ({"symbol": "BTCUSDT", "exitPct": 33}, "exitPct"),
        ({"symbol": "BTCUSDT", "side": "up"}, "side"),
        ({"symbol": "BTCUSDT", "dry_run": "yes"}, "dry_run"),
    ],
)
def test_malformed_bodies_are_422(
    trading: Trading,
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
    body: dict[str, Any],
    field: str,
) -> None:
    open_position(owner=accounts[1])

    response = trading.post("/api/partialclose", body, trading.key(accounts[1]))

    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] == field
    assert trading.relay.journal.all() == []


def test_allowed_price_above_the_price_of_a_long_is_price_slippage(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    position_id = _seed_position(open_position, set_market_price, accounts[1])

    response = trading.post(
        "/api/partialclose",
        {"symbol": "BTCUSDT", "exit_pct": 33, "allowedPrice": "96200.01"},
        trading.key(accounts[1]),
    )

    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "price_slippage"
    assert response.json()["error"]["details"]["price"] == "96200"
    assert trading.relay.journal.all() == []
    assert vault.position(position_id).size == units("0.42")


def test_allowed_price_and_max_slippage_together_is_422(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(owner=accounts[1])

    response = trading.post(
        "/api/partialclose",
        {"symbol": "BTCUSDT", "allowedPrice": "95000", "maxSlippageBps": 50},
        trading.key(accounts[1]),
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] == "maxSlippageBps"


@pytest.mark.parametrize(
    ("is_long", "extra", "expected_allowed_e8"),
    [
        # the default guard (1%): a long's minimum rounds up toward the price, a short's maximum down
        (True, {}, -(-9_620_000_000_000 * 9_900 // 10_000)),
        (False, {}, 9_620_000_000_000 * 10_100 // 10_000),
        (True, {"maxSlippageBps": 37}, -(-9_620_000_000_000 * 9_963 // 10_000)),
        (True, {"allowedPrice": "96000.5"}, 9_600_050_000_000),
    ],
)
def test_the_sent_allowed_price_is_the_slippage_bound(
    trading: Trading,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
    is_long: bool,
    extra: dict[str, Any],
    expected_allowed_e8: int,
) -> None:
    open_position(market="BTCUSDT", is_long=is_long, size="0.42", owner=accounts[1])
    set_market_price("BTCUSDT", "96200")

    response = trading.post(
        "/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 33, **extra}, trading.key(accounts[1])
    )

    assert response.status_code == 200, response.text
    assert _sent_close(trading, response.json()["transactionId"])["allowedPrice"] == expected_allowed_e8
    # a price that does not move is within any bound; with 1% it would also have been within 0.99 x 96200
    assert expected_allowed_e8 != 0


def test_202_when_the_receipt_does_not_come_in_time_then_mined(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
    mining: Mining,
) -> None:
    """Automine is off, so no receipt can come before the (short) receipt timeout: 202 with the id."""
    approve_operators(accounts[1])
    position_id = _seed_position(open_position, set_market_price, accounts[1])
    trading = make_trading(receipt_timeout_s=0.3)
    key = trading.key(accounts[1])
    mining.stop()

    response = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 33}, key)

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["success"] is False
    assert accepted["status"] == "submitted"
    transaction_id = accepted["transactionId"]
    assert accepted["transactionHash"] == trading.relay.get(transaction_id).latest.tx_hash
    assert vault.position(position_id).size == units("0.42")  # not mined yet

    mining.mine()
    trading.settle()

    status = trading.get(f"/api/trade/transactions/{transaction_id}", key)
    assert status.status_code == 200, status.text
    assert status.json()["status"] == "confirmed"
    assert status.json()["transactionHash"] == accepted["transactionHash"]
    (event,) = [e for e in status.json()["receipt"]["events"] if e["event"] == "PositionDecreased"]
    assert event["args"]["sizeDelta"] == str(units("0.1386"))
    assert vault.position(position_id).size == units("0.2814")


def test_a_fresh_journal_after_the_signers_sent_elsewhere_takes_the_chains_nonces(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
) -> None:
    """The signers' chain nonces are ahead of a new journal: the first trade must start from the chain's."""
    from relayer.chain.transact import send

    approve_operators(accounts[1])
    position_id = open_position(owner=accounts[1])
    for signer in accounts[5:7]:
        send(vault.w3, signer, vault.address, calldata.set_operator(accounts[9].address, True))
    trading = make_trading()

    response = trading.post(
        "/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 20}, trading.key(accounts[1])
    )

    assert response.status_code == 200, response.text
    assert trading.relay.get(response.json()["transactionId"]).nonce == 1
    assert vault.position(position_id).size == units("0.8")


def test_the_relayed_close_keeps_the_configured_gas_margin_and_room_for_the_operator_check(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
) -> None:
    """The relay sends the builder's simulated call with the builder's gas limit (its estimate plus the
    operator's configured margin), plus `OPERATOR_CHECK_GAS` for the operator check the relayer's call makes;
    never the default margin in place of the configured one."""
    trader = accounts[1]
    approve_operators(trader)
    position_id = open_position(market="BTCUSDT", is_long=True, size="1", owner=trader)
    trading = make_trading(gas_limit_margin_bps=5_000)
    half = CloseRequest(position_id, size_delta=units("0.5"), allowed_price_e8=usd("90000"))
    built = trading.run(lambda: trading.runtime.builder.build(half))
    assert built.gas_limit == -(-built.gas_estimate * 3 // 2)  # +50% (rounded up), as configured

    body = {
        "symbol": "BTCUSDT",
        "positionId": "0x" + position_id.hex(),
        "exit_pct": 50,
        "allowedPrice": "90000",
    }
    response = trading.post("/api/partialclose", body, trading.key(trader))

    assert response.status_code == 200, response.text
    record = trading.relay.get(response.json()["transactionId"])
    assert record.gas_limit == built.gas_limit + OPERATOR_CHECK_GAS
