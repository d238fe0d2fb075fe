"""`Idempotency-Key` on trading calls: a retry gets the first answer back, never a second transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount

from relayer.chain.vault import VaultReader
from tests.trading.conftest import Trading, tool_json


def test_a_retried_full_close_returns_the_original_fill(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(owner=accounts[1], size="0.3")
    key = trading.key(accounts[1])
    body = {"symbol": "BTCUSDT", "exit_pct": 100}

    first = trading.post("/api/partialclose", body, key, **{"Idempotency-Key": "close-1"})
    again = trading.post("/api/partialclose", body, key, **{"Idempotency-Key": "close-1"})

    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json() == first.json()  # even though the position no longer exists
    assert first.json()["closed_qty"] == "0.3"
    assert len(trading.relay.journal.all()) == 1


def test_a_retried_partial_close_does_not_close_half_of_the_rest(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position_id = open_position(owner=accounts[1], size="1")
    key = trading.key(accounts[1])
    body = {"symbol": "BTCUSDT", "exit_pct": 50}

    first = trading.post("/api/partialclose", body, key, **{"Idempotency-Key": "half"})
    again = trading.post("/api/partialclose", body, key, **{"Idempotency-Key": "half"})

    assert again.json() == first.json()
    assert vault.position(position_id).size == 5 * 10**17  # closed once


def test_the_same_key_with_another_body_is_a_conflict(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(owner=accounts[1])
    key = trading.key(accounts[1])
    trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 10}, key, **{"Idempotency-Key": "k"})

    conflict = trading.post(
        "/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 20}, key, **{"Idempotency-Key": "k"}
    )

    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert len(trading.relay.journal.all()) == 1


def test_keys_are_per_account(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    """Another account using the same key string makes its own transaction (keys are scoped per account)."""
    for trader in accounts[1:3]:
        open_position(owner=trader)
    body = {"symbol": "BTCUSDT", "exit_pct": 10}
    answers = [
        trading.post("/api/partialclose", body, trading.key(trader), **{"Idempotency-Key": "shared"})
        for trader in accounts[1:3]
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["positionId"] != answers[1].json()["positionId"]
    assert len(trading.relay.journal.all()) == 2


def test_mcp_retries_with_the_same_idempotency_key_send_once(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(owner=accounts[1])
    args = {"symbol": "BTCUSDT", "exit_pct": 25, "api_key": trading.key(accounts[1]), "idempotency_key": "a1"}
    first = tool_json(trading.mcp("partial_close", args))
    again = tool_json(trading.mcp("partial_close", args))
    assert again == first
    assert len(trading.relay.journal.all()) == 1


def test_concurrent_copies_of_one_keyed_close_all_get_its_fill(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    """Ten copies of a full close with one key, at once: one transaction, and every copy answers its fill,
    never the `position_not_found` a late copy meets once the winner closed the position."""
    open_position(owner=accounts[1], size="0.3")
    key = trading.key(accounts[1])
    body = {"symbol": "BTCUSDT", "exit_pct": 100}

    async def race() -> list[Any]:
        service = trading.service
        copies = [service.partial_close(key, body, idempotency_key="close-all") for _ in range(10)]
        return await asyncio.gather(*copies, return_exceptions=True)

    answers = trading.run(race)
    assert [a for a in answers if isinstance(a, BaseException)] == []
    bodies = [a.body for a in answers]
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["closed_qty"] == "0.3"
    assert len(trading.relay.journal.all()) == 1
