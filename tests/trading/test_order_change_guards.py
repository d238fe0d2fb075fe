"""Order changes the relayer refuses before paying for them, and the grant it refuses to act under (issue 12
review): a change that would leave the plan as it is (409 `nothing_to_change`), a cancel of an order that is
not pending (404 `order_not_found`), a primary take-profit without a percent on a ladder (422, naming
`close_pct`), and a grant holding `loosen_or_cancel_stop` (409 `operator_not_approved` with the narrowing
calldata). Under the narrow grant, the vault itself refuses a loosening that two concurrent "tighter" stop
changes would otherwise make: the race replayed with mining paused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.vault import VaultReader
from relayer.constants import RELAYER_RIGHTS
from relayer.domain import calldata
from relayer.domain.operators import grant_expiry
from relayer.domain.positions import OrderView
from relayer.domain.status import TxStatus
from tests.conftest import units, usd
from tests.trading.conftest import Mining, Trading, set_automine, tool_error

TIERS = [
    {"price": "98000", "exit_pct": 25},
    {"price": "99000", "exit_pct": 25},
    {"price": "100000", "exit_pct": 25},
]


def _pid(position_id: bytes) -> str:
    return "0x" + position_id.hex()


def _refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


def test_a_change_that_changes_nothing_is_refused_and_nothing_is_sent(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    set_market_price("BTCUSDT", "96000")
    position = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    bare = open_position(market="ETHUSDT", is_long=True, size="1", owner=accounts[1])
    key, pid = trading.key(accounts[1]), _pid(position)
    sent = 0

    def twice(path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The change is sent once; the same again is refused 409 and sends nothing."""
        nonlocal sent
        first = trading.post(path, body, key)
        assert first.status_code == 200, first.text
        sent += 1
        error = _refused(trading.post(path, body, key), 409, "nothing_to_change")
        assert error["details"]["positionId"] == body["positionId"]
        assert len(trading.relay.journal.all()) == sent
        return error

    twice("/api/trade/takeprofit", {"positionId": pid, "price": "99000"})
    twice("/api/trade/stoploss", {"positionId": pid, "price": "94000"})
    repeat = {"position_id": pid, "price": "99000", "api_key": key}
    assert tool_error(trading.mcp("set_take_profit", repeat))["code"] == "nothing_to_change"

    # Price 0 cancels the primary take-profit; with none pending it is 404, as is cancelling an empty id.
    cancelled = trading.post("/api/trade/takeprofit", {"positionId": pid, "price": "0"}, key)
    assert cancelled.status_code == 200, cancelled.text
    sent += 1
    for path, body in (
        ("/api/trade/takeprofit", {"positionId": pid, "price": "0"}),
        ("/api/trade/stoploss", {"positionId": _pid(bare), "price": "0"}),  # before the 403 of a cancel
        ("/api/trade/orders/cancel", {"positionId": pid, "orderId": 5}),
    ):
        missing = _refused(trading.post(path, body, key), 404, "order_not_found")
        assert missing["details"]["positionId"] == body["positionId"]
    assert len(trading.relay.journal.all()) == sent

    set_market_price("BTCUSDT", "97000")
    twice("/api/trade/breakeven", {"positionId": pid})
    plan = {"positionId": pid, "take_profits": TIERS, "stop_loss": {"price": "96000"}}
    twice("/api/trade/exitplan", plan)
    assert vault.orders_of(position).order(4) == OrderView(4, False, usd("96000"), 10_000, 0, units("1"))


def test_a_primary_take_profit_without_a_percent_on_a_ladder_is_refused_naming_close_pct(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    key, pid = trading.key(accounts[1]), _pid(position)
    ladder = trading.post("/api/trade/exitplan", {"positionId": pid, "take_profits": TIERS}, key)
    assert ladder.status_code == 200, ladder.text
    sent = len(trading.relay.journal.all())

    error = _refused(
        trading.post("/api/trade/takeprofit", {"positionId": pid, "price": "97500"}, key),
        422,
        "invalid_field",
    )
    assert error["details"]["field"] == "close_pct"
    assert error["details"]["takeProfits"] == [0, 1, 2]
    assert (
        "take-profit ladder: give exit_pct to add a tier, or close_pct to replace order 0" in error["message"]
    )
    assert len(trading.relay.journal.all()) == sent
    assert vault.orders_of(position).order(0) == OrderView(0, True, usd("98000"), 2_500, 0, units("0.25"))

    replaced = trading.post(
        "/api/trade/takeprofit", {"positionId": pid, "price": "97500", "close_pct": 25}, key
    )
    assert replaced.status_code == 200, replaced.text
    assert vault.orders_of(position).order(0) == OrderView(0, True, usd("97500"), 2_500, 0, units("0.25"))


def test_a_grant_that_can_loosen_a_stop_is_refused_and_the_vault_holds_the_stop_in_a_race(
    make_trading: Callable[..., Trading],
    chain: Chain,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    accounts: list[LocalAccount],
    mining: Mining,
) -> None:
    """The legacy `setOperator(true)` (every right) is refused for every action, closes included. Once
    narrowed to the relayer's rights, two stop changes both judged tighter against the same stop (94000)
    are sent in one block: 95500 then 94500. The second would loosen the first: the VAULT refuses it
    (`operator_right_missing`), so the mined stop is 95500, never 94500. One signer, so they are mined in
    the order sent (anvil: in one block; eth-tester holds one pending transaction per sender and takes the
    second once the first is mined)."""
    trader, signer = accounts[3], accounts[5]
    set_market_price("BTCUSDT", "96000")
    position = open_position(market="BTCUSDT", is_long=True, size="1", owner=trader)
    transact(trader, calldata.set_operator(signer.address, True))
    trading = make_trading(signers=[signer], receipt_timeout_s=0.3)
    key, pid = trading.key(trader), _pid(position)

    refusals = [
        trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 33}, key),
        trading.post("/api/trade/stoploss", {"positionId": pid, "price": "94000"}, key),
    ]
    errors = [_refused(answer, 409, "operator_not_approved") for answer in refusals]
    error = errors[0]
    assert error["message"].startswith(
        "the relayer's signers hold loosen_or_cancel_stop: narrow the grant to 7 (close, set_take_profit,"
        " tighten_stop) so the vault itself refuses any loosening"
    )
    assert error["details"]["signers"] == [signer.address]
    assert error["details"]["reasons"] == {signer.address: "holds loosen_or_cancel_stop"}
    expires_at = error["details"]["expiresAt"]
    assert expires_at == grant_expiry(int(chain.w3.eth.get_block("latest")["timestamp"]) + 1)
    assert error["details"]["calldata"] == [
        "0x" + calldata.set_operator_rights(signer.address, RELAYER_RIGHTS, expires_at).hex()
    ]
    assert errors[1]["details"]["calldata"] == error["details"]["calldata"]
    assert trading.relay.journal.all() == []
    assert vault.position(position).size == units("1")

    transact(trader, bytes.fromhex(error["details"]["calldata"][0][2:]))
    assert vault.operator_grant(trader.address, signer.address).rights == RELAYER_RIGHTS
    first = trading.post("/api/trade/stoploss", {"positionId": pid, "price": "94000"}, key)
    assert first.status_code == 200, first.text

    mining.stop()
    tighter = trading.post("/api/trade/stoploss", {"positionId": pid, "price": "95500"}, key)
    stale = trading.post("/api/trade/stoploss", {"positionId": pid, "price": "94500"}, key)
    assert (tighter.status_code, stale.status_code) == (202, 202), (tighter.text, stale.text)
    set_automine(chain, True)  # mines what is pending, and what the relay sends next
    trading.settle()

    assert trading.relay.get(tighter.json()["transactionId"]).status.is_succeeded
    loosening = trading.relay.get(stale.json()["transactionId"])
    assert loosening.status == TxStatus.FAILED
    assert loosening.error is not None
    assert loosening.error["code"] == "operator_right_missing"
    assert vault.orders_of(position).order(4) == OrderView(4, False, usd("95500"), 10_000, 0, units("1"))
