"""`GET /health` with a relay: signer balances, and the low-balance alert that marks the service degraded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from relayer.config import RelaySettings
from tests.trading.conftest import Trading


def test_health_lists_the_signers_and_is_ok(trading: Trading) -> None:
    body = trading.client.get("/health").json()

    assert body["status"] == "ok"
    assert {s["address"] for s in body["relay"]["signers"]} == {s.address for s in trading.signers}
    assert body["relay"]["lowBalance"] is False


def test_a_signer_below_the_minimum_balance_degrades_health(
    make_trading: Callable[..., Trading], tmp_path: Path
) -> None:
    relay = RelaySettings(journal_path=tmp_path / "low.sqlite3", min_signer_balance_wei=10**30)
    body = make_trading(relay=relay).client.get("/health")

    assert body.status_code == 200  # it still serves; the alert is for the operator
    assert body.json()["status"] == "degraded"
    assert body.json()["relay"]["lowBalance"] is True
    assert all(s["lowBalance"] for s in body.json()["relay"]["signers"])
