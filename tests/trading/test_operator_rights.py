"""The relayer's operator grant (issue 12): API-key trading needs the CLOSE right of every relayer signer,
unexpired, and asks for the reduce-only rights only (close, set take-profits, tighten stops), so the relayer
can close a position and tighten its stop but never loosen or cancel it. Every refusal says what is missing
and carries the calldata that grants it."""

from __future__ import annotations

from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.vault import VaultReader
from relayer.constants import RELAYER_RIGHTS, RIGHT_SET_TAKE_PROFIT
from relayer.domain import calldata
from relayer.domain.operators import grant_expiry
from tests.conftest import units
from tests.trading.conftest import Trading

CLOSE_33 = {"symbol": "BTCUSDT", "exit_pct": 33}


def _grant(
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    trader: LocalAccount,
    signers: list[str],
    rights: int,
    expires_at: int,
) -> None:
    for signer in signers:
        transact(trader, calldata.set_operator_rights(signer, rights, expires_at))


def test_trading_needs_the_close_right_unexpired_and_says_how_to_grant_it(
    make_trading: Callable[..., Trading],
    chain: Chain,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    accounts: list[LocalAccount],
) -> None:
    trader = accounts[3]
    position_id = open_position(owner=trader)
    trading = make_trading()
    key = trading.key(trader)
    signers = [s.address for s in trading.signers]
    now = int(chain.w3.eth.get_block("latest")["timestamp"])

    # Take-profits only: not enough to close.
    _grant(transact, trader, signers, RIGHT_SET_TAKE_PROFIT, 0)
    refused = trading.post("/api/partialclose", CLOSE_33, key)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "operator_not_approved"
    assert error["details"]["signers"] == signers
    assert error["details"]["reasons"] == {signer: "lacks close" for signer in signers}
    assert error["details"]["right"] == "close"
    assert error["details"]["rights"] == RELAYER_RIGHTS
    expires_at = error["details"]["expiresAt"]
    assert expires_at == grant_expiry(int(chain.w3.eth.get_block("latest")["timestamp"]) + 1)
    assert error["details"]["calldata"] == [
        "0x" + calldata.set_operator_rights(signer, RELAYER_RIGHTS, expires_at).hex() for signer in signers
    ]
    assert "setOperatorRights" in error["message"]

    # Granted, but expired (the vault compares with the block time; the relayer with its clock).
    _grant(transact, trader, signers, RELAYER_RIGHTS, now - 1)
    expired = trading.post("/api/partialclose", CLOSE_33, key).json()["error"]
    assert expired["details"]["reasons"] == {signer: "expired" for signer in signers}

    # The calldata from the answer, sent by the account itself: now it trades.
    for data in error["details"]["calldata"]:
        transact(trader, bytes.fromhex(data[2:]))
    assert vault.operator_grant(trader.address, signers[0]).rights == RELAYER_RIGHTS
    closed = trading.post("/api/partialclose", CLOSE_33, key)
    assert closed.status_code == 200, closed.text
    assert vault.position(position_id).size == units("0.67")


def test_the_relayers_rights_tighten_a_stop_but_never_loosen_or_cancel_it(
    make_trading: Callable[..., Trading],
    chain: Chain,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    accounts: list[LocalAccount],
) -> None:
    trader = accounts[3]
    set_market_price("BTCUSDT", "96000")
    position_id = open_position(owner=trader)
    trading = make_trading()
    key = trading.key(trader)
    signers = [s.address for s in trading.signers]
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    _grant(transact, trader, signers, RELAYER_RIGHTS, grant_expiry(now))
    pid = "0x" + position_id.hex()

    assert trading.post("/api/trade/stoploss", {"positionId": pid, "price": "94000"}, key).status_code == 200
    tighter = trading.post("/api/trade/stoploss", {"positionId": pid, "price": "95000"}, key)
    assert tighter.status_code == 200, tighter.text
    assert vault.position(position_id).stop_loss.price_e8 == 95_000 * 10**8

    sent = len(trading.relay.journal.all())
    for body in ({"positionId": pid, "price": "93000"}, {"positionId": pid, "price": "0"}):
        looser = trading.post("/api/trade/stoploss", body, key)
        assert looser.status_code == 403, looser.text
        error = looser.json()["error"]
        assert error["code"] == "operator_right_missing"
        assert error["details"]["rightName"] == "loosen_or_cancel_stop"
        assert error["details"]["account"] == trader.address
        assert "POST /api/relay/signed" in error["message"]
    assert len(trading.relay.journal.all()) == sent  # refused before sending: no gas spent on a revert
    assert vault.position(position_id).stop_loss.price_e8 == 95_000 * 10**8  # untouched
