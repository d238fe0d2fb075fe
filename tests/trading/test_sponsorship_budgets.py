"""API-key accounts are sponsored within their key's budget, answered alike by REST and MCP; the keeper is
counted but never refused, so a spent daily cap never stops a stop-loss from firing."""

from __future__ import annotations

from collections.abc import Callable

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from relayer.chain.vault import VaultReader
from relayer.domain import calldata
from relayer.domain.sponsorship import DAY_S, Policy, Window, window_start
from relayer.faces.cli import keys as keys_cli
from tests.conftest import usd
from tests.trading.conftest import Trading, tool_error


def test_a_key_past_its_daily_gas_budget_is_refused_429_over_rest_and_mcp(
    trading: Trading, accounts: list[LocalAccount], open_position: Callable[..., bytes]
) -> None:
    open_position(market="BTCUSDT", size="1", owner=accounts[1])
    key = trading.key(accounts[1])
    first = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 10}, key)
    assert first.status_code == 200, first.text
    trading.settle()
    # Now the key's budget is what it already spent: the next call cannot fit.
    spent = int(trading.relay.health()["sponsorship"]["today"]["spentWei"])
    assert spent > 0
    trading.relay.inner.policy = Policy(key_gas_wei_per_day=spent)
    records = len(trading.relay.journal.all())

    refused = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 10}, key)
    tool = tool_error(trading.mcp("partial_close", {"symbol": "BTCUSDT", "exit_pct": 10, "api_key": key}))

    assert refused.status_code == 429, refused.text
    body = refused.json()["error"]
    assert body["code"] == tool["code"] == "quota_exceeded"
    assert body["details"]["scope"].startswith("key:")
    assert body["details"]["budget"] == "gas_wei"
    assert body["details"]["limit"] == str(spent)
    assert int(refused.headers["Retry-After"]) == body["details"]["retryAfterS"]
    assert tool["details"]["scope"] == body["details"]["scope"]
    assert len(trading.relay.journal.all()) == records  # nothing signed


def test_the_keeper_fires_a_stop_loss_when_the_daily_cap_is_spent(
    trading: Trading,
    vault: VaultReader,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
) -> None:
    owner = accounts[1]
    set_market_price("BTCUSDT", "100000")
    position_id = open_position(market="BTCUSDT", size="1", owner=owner)
    transact(owner, calldata.set_stop_loss(position_id, usd("95000"), 10_000))  # set by the owner itself
    trading.relay.inner.policy = Policy(daily_cap_wei=1)  # spent at once: nothing sponsored is affordable
    refused = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 10}, trading.key(owner))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["details"]["scope"] == "global"

    set_market_price("BTCUSDT", "94000")
    executions = trading.keeper.tick()
    trading.settle()

    assert [(e.position_id, e.is_take_profit) for e in executions] == [(position_id, False)]
    assert trading.relay.get(executions[0].record_id).status.value == "confirmed"
    assert vault.position(position_id).size == 0
    today = trading.relay.health()["sponsorship"]["today"]
    assert int(today["spentWei"]) > 1  # the keeper's execution is counted against the cap, not refused by it
    assert today["capReached"] is True
    # Counted against the owner's own day as well: orders set on chain are not a free ride on the keeper.
    record = trading.relay.get(executions[0].record_id)
    assert record.mined is not None
    now_s = int(trading.relay.inner.clock())
    day = Window(f"owner:{owner.address.lower()}", DAY_S, window_start(now_s, DAY_S))
    spent = trading.relay.journal.spend_usage(record.chain_id, [day])[day.key()].spent_wei
    assert spent == record.mined.gas_used * record.mined.effective_gas_price_wei


def test_a_keys_own_daily_spend_overrides_the_policys(
    trading: Trading, accounts: list[LocalAccount], open_position: Callable[..., bytes]
) -> None:
    open_position(market="BTCUSDT", size="1", owner=accounts[1])
    address = accounts[1].address
    tiny, _ = keys_cli.create_key(
        trading.runtime.keys, account=address, scopes="read,trade", daily_spend_wei=1
    )
    roomy = trading.key(accounts[1])  # the policy's per-key budget (1 ether a day)

    refused = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 10}, tiny)
    served = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 10}, roomy)

    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["details"]["limit"] == "1"
    assert served.status_code == 200, served.text


def test_signed_requests_have_their_own_share_of_the_cap_so_api_key_accounts_keep_trading(
    trading: Trading, accounts: list[LocalAccount], open_position: Callable[..., bytes]
) -> None:
    """Throwaway owners spending the signed requests' share do not lock the operator's key holders out."""
    owner = accounts[1]
    position_id = open_position(market="BTCUSDT", size="1", owner=owner)
    trading.relay.inner.policy = Policy(signed_daily_cap_wei=1)
    typed = trading.client.get(
        "/api/relay/typed-data",
        params={
            "kind": "trigger",
            "positionId": "0x" + position_id.hex(),
            "isTakeProfit": "true",
            "price": "99000",
            "closeBps": "5000",
        },
    )
    assert typed.status_code == 200, typed.text
    signature = Account.sign_typed_data(owner.key, full_message=typed.json()["typedData"]).signature
    body = {
        "kind": "trigger",
        "request": typed.json()["typedData"]["message"],
        "signature": "0x" + signature.hex(),
    }

    refused = trading.post("/api/relay/signed", body, None)
    served = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 10}, trading.key(owner))

    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["details"]["scope"] == "signed"
    assert served.status_code == 200, served.text
