"""POST /api/closeposition end to end: build over HTTP, sign the returned transaction with the owner's key as
is, send it, and check the chain moved exactly as the preview said. Runs on eth-tester and on anvil."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from web3.logs import DISCARD
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader
from relayer.constants import ETH_DECIMALS, PNL_DECIMALS, PRICE_DECIMALS, SIZE_DECIMALS
from relayer.domain.units import format_fixed
from tests.api.conftest import SignAndSend

SIDES = pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])

JSON = {"content-type": "application/json"}


def build(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/closeposition", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def pid_hex(position_id: bytes) -> str:
    return "0x" + position_id.hex()


def decreased(vault: VaultReader, receipt: TxReceipt) -> dict[str, Any]:
    (event,) = vault.contract.events.PositionDecreased().process_receipt(receipt, errors=DISCARD)
    return dict(event["args"])


def assert_fill_matches(fill: dict[str, Any], preview: dict[str, Any]) -> None:
    assert format_fixed(fill["sizeDelta"], SIZE_DECIMALS) == preview["sizeDelta"]
    assert format_fixed(fill["remainingSize"], SIZE_DECIMALS) == preview["sizeAfter"]
    assert format_fixed(fill["exitPrice"], PRICE_DECIMALS) == preview["currentPrice"]
    assert format_fixed(fill["realizedPnl"], PNL_DECIMALS) == preview["realizedPnl"]


def assert_remaining_pnl(vault: VaultReader, position_id: bytes, preview: dict[str, Any]) -> None:
    """The preview's unrealized PnL of what remains equals the vault's own arithmetic on the new state."""
    after = vault.position(position_id)
    assert format_fixed(after.size, SIZE_DECIMALS) == preview["sizeAfter"]
    exit_price = vault.price(after.market).price_e8
    pnl = vault.contract.functions.realizedPnl(
        after.is_long, after.entry_price_e8, exit_price, after.size
    ).call()
    assert format_fixed(pnl, PNL_DECIMALS) == preview["remainingUnrealizedPnl"]


def orders_on_chain(vault: VaultReader, position_id: bytes) -> tuple[Any, Any]:
    p = vault.position(position_id)

    def shown(order: Any) -> Any:
        return (
            {"price": format_fixed(order.price_e8, 8), "closeBps": order.close_bps} if order.active else None
        )

    return shown(p.take_profit), shown(p.stop_loss)


@SIDES
def test_full_close(
    client: TestClient,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    sign_and_send: SignAndSend,
    accounts: list[LocalAccount],
    chain: Chain,
    deployment: Deployment,
    is_long: bool,
) -> None:
    owner = accounts[2]
    position_id = open_position(is_long=is_long, size="0.42", owner=owner)
    set_market_price("BTCUSDT", "97250.5")
    result = build(client, positionId=pid_hex(position_id))

    assert result["action"] == "close"
    assert result["vaultAddress"] == deployment.address
    tx = result["transaction"]
    assert tx["from"] == owner.address
    assert tx["to"] == deployment.address
    assert tx["data"] == result["calldata"]
    assert tx["type"] == "0x2"
    quantities = {name: tx[name] for name in ("chainId", "nonce", "gas", "value", "maxFeePerGas")}
    assert all(value.startswith("0x") for value in quantities.values())  # exact in JavaScript's JSON.parse
    assert int(tx["chainId"], 16) == chain.w3.eth.chain_id
    assert int(tx["nonce"], 16) == chain.w3.eth.get_transaction_count(owner.address, "pending")
    assert int(tx["value"], 16) == 0
    assert int(tx["gas"], 16) > result["gasEstimate"]
    assert result["requiredGasFee"] == format_fixed(
        int(tx["gas"], 16) * int(tx["maxFeePerGas"], 16), ETH_DECIMALS
    )
    assert result["serializedTransaction"].startswith("0x02")
    preview = result["preview"]
    assert (preview["sizeBefore"], preview["sizeDelta"], preview["sizeAfter"]) == ("0.42", "0.42", "0")
    assert preview["currentPrice"] == "97250.5"
    assert preview["side"] == ("long" if is_long else "short")
    assert preview["realizedPnl"] == ("525.21" if is_long else "-525.21")
    assert preview["remainingUnrealizedPnl"] == "0"

    receipt = sign_and_send(owner, tx)
    fill = decreased(vault, receipt)
    assert_fill_matches(fill, preview)
    assert vault.position(position_id).size == 0
    # The vault keeps no PnL total in storage (issue 12): the event is the record, and it is the vault's own
    # arithmetic on the fill.
    closed = vault.position(position_id)
    booked = vault.contract.functions.realizedPnl(
        is_long, closed.entry_price_e8, fill["exitPrice"], fill["sizeDelta"]
    ).call()
    assert fill["realizedPnl"] == booked
    assert format_fixed(booked, PNL_DECIMALS) == preview["realizedPnl"]


@SIDES
def test_partial_close_with_a_slippage_bound(
    client: TestClient,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    sign_and_send: SignAndSend,
    accounts: list[LocalAccount],
    is_long: bool,
) -> None:
    position_id = open_position(market="ETHUSDT", is_long=is_long, size="3.000000000000000007")
    set_market_price("ETHUSDT", "3412.34567891")
    allowed = "3400" if is_long else "3420"  # long: at least, short: at most
    result = build(client, positionId=pid_hex(position_id), sizeDelta="1.1", allowedPrice=allowed)

    assert result["action"] == "decrease"
    preview = result["preview"]
    assert (preview["sizeDelta"], preview["sizeAfter"], preview["allowedPrice"]) == (
        "1.1",
        "1.900000000000000007",
        allowed,
    )
    receipt = sign_and_send(accounts[1], result["transaction"])
    assert_fill_matches(decreased(vault, receipt), preview)
    assert_remaining_pnl(vault, position_id, preview)


@SIDES
def test_modify_take_profit_and_stop_loss_only(
    client: TestClient,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    sign_and_send: SignAndSend,
    accounts: list[LocalAccount],
    is_long: bool,
) -> None:
    position_id = open_position(is_long=is_long, size="2")
    take_profit, stop_loss = ("99000", "93000.25") if is_long else ("93000.25", "99000")
    result = build(
        client,
        positionId=pid_hex(position_id),
        takeProfit=take_profit,
        takeProfitClosePercent=5000,
        stopLoss=stop_loss,
        stopLossClosePercent=10000,
    )

    assert result["action"] == "set_triggers"
    preview = result["preview"]
    assert (preview["sizeDelta"], preview["sizeAfter"], preview["realizedPnl"]) == ("0", "2", "0")
    assert preview["takeProfit"] == {"price": take_profit, "closeBps": 5000}
    assert preview["stopLoss"] == {"price": stop_loss, "closeBps": 10000}
    receipt = sign_and_send(accounts[1], result["transaction"])
    assert vault.contract.events.PositionDecreased().process_receipt(receipt, errors=DISCARD) == ()
    assert len(vault.contract.events.TriggerSet().process_receipt(receipt, errors=DISCARD)) == 2
    assert orders_on_chain(vault, position_id) == (preview["takeProfit"], preview["stopLoss"])


@SIDES
def test_partial_close_and_move_the_stop_in_one_transaction(
    client: TestClient,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    sign_and_send: SignAndSend,
    accounts: list[LocalAccount],
    is_long: bool,
) -> None:
    position_id = open_position(is_long=is_long, size="0.9")
    set_market_price("BTCUSDT", "96500" if is_long else "95500")  # in profit either way
    stop_loss = "96000"  # move the stop to break-even (the entry price)
    result = build(
        client,
        positionId=pid_hex(position_id),
        sizeDelta="0.3",
        stopLoss=stop_loss,
        stopLossClosePercent=10000,
    )

    assert result["action"] == "decrease_and_set_triggers"
    preview = result["preview"]
    assert preview["realizedPnl"] == "150"
    assert preview["remainingUnrealizedPnl"] == "300"
    receipt = sign_and_send(accounts[1], result["transaction"])
    assert_fill_matches(decreased(vault, receipt), preview)
    assert_remaining_pnl(vault, position_id, preview)
    assert orders_on_chain(vault, position_id) == (None, {"price": stop_loss, "closeBps": 10000})


def test_cancelling_an_order(
    client: TestClient,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    sign_and_send: SignAndSend,
    accounts: list[LocalAccount],
) -> None:
    position_id = open_position()
    first = build(client, positionId=pid_hex(position_id), takeProfit="100000", takeProfitClosePercent=2500)
    sign_and_send(accounts[1], first["transaction"])
    assert orders_on_chain(vault, position_id)[0] == {"price": "100000", "closeBps": 2500}
    cancel = build(client, positionId=pid_hex(position_id), takeProfit=0)
    assert cancel["preview"]["takeProfit"] is None
    sign_and_send(accounts[1], cancel["transaction"])
    assert orders_on_chain(vault, position_id) == (None, None)


def test_numbers_may_be_json_numbers_and_stay_exact(
    client: TestClient, open_position: Callable[..., bytes]
) -> None:
    position_id = open_position(size="1")
    body = f'{{"positionId": "{pid_hex(position_id)}", "sizeDelta": 0.1000000000000000055511151231257827}}'
    response = client.post("/api/closeposition", content=body, headers=JSON)
    assert response.status_code == 422  # as a float this would silently become 0.1
    assert response.json()["error"]["details"]["field"] == "sizeDelta"
    body = f'{{"positionId": "{pid_hex(position_id)}", "sizeDelta": 0.100000000000000001}}'
    assert (
        client.post("/api/closeposition", content=body, headers=JSON).json()["preview"]["sizeDelta"]
        == "0.100000000000000001"
    )


def test_the_pending_nonce_counts_transactions_not_yet_built_against(
    client: TestClient,
    open_position: Callable[..., bytes],
    sign_and_send: SignAndSend,
    accounts: list[LocalAccount],
) -> None:
    first, second = open_position(size="1"), open_position(size="1")
    tx1 = build(client, positionId=pid_hex(first))["transaction"]
    sign_and_send(accounts[1], tx1)
    tx2 = build(client, positionId=pid_hex(second))["transaction"]
    assert int(tx2["nonce"], 16) == int(tx1["nonce"], 16) + 1
    sign_and_send(accounts[1], tx2)
