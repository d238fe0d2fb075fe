"""A signed request is relayed only when its deadline leaves `min_deadline_margin_s` after the latest block
(issue 11).

The attack measured before: a request whose `deadline` equals the latest block's timestamp passed the checks
(the simulation runs on the latest block, and the next block is always later), was sent, expired, and the
relayer paid a 21,000-gas no-op for its nonce; the owner's vault nonce never moved, so it repeated for free
every block. Now it is refused (422 `deadline_too_soon`) before anything is signed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.config import RelaySettings
from relayer.domain.status import TxStatus
from relayer.errors import ConfigurationError
from relayer.services.relay.service import RelayService
from tests.blocking import Blocking
from tests.relay.conftest import http_client

MARGIN_S = 30
"""`RelaySettings.min_deadline_margin_s`'s default."""


def _error(response: Any) -> tuple[int, str | None]:
    """(status, error code); a record answered instead (202) has no error code, or its node's note."""
    return response.status_code, (response.json().get("error") or {}).get("code")


def _latest_timestamp(chain: Chain) -> int:
    with chain.lock:
        return int(chain.w3.eth.get_block("latest")["timestamp"])


def _spent(chain: Chain, relayer: list[LocalAccount]) -> list[tuple[int, int]]:
    """Each relayer signer's (balance, nonce): what a relayed transaction or a no-op would move."""
    with chain.lock:
        return [
            (int(chain.w3.eth.get_balance(a.address)), int(chain.w3.eth.get_transaction_count(a.address)))
            for a in relayer
        ]


def test_a_deadline_closer_than_the_margin_is_refused_before_anything_is_signed(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    before = _spent(chain, relay_accounts)
    latest = _latest_timestamp(chain)

    at_the_block = signed_body(trader, position_id, deadline=str(latest))  # the measured attack
    response = client.post("/api/relay/signed", json=at_the_block)
    assert _error(response) == (422, "deadline_too_soon")  # before: 202, then expired and a paid no-op
    assert response.json()["error"]["details"] == {
        "deadline": latest,
        "timestamp": latest,
        "minMarginS": MARGIN_S,
        "earliestDeadline": latest + MARGIN_S,
    }
    just_short = signed_body(trader, position_id, deadline=str(latest + MARGIN_S - 1))
    assert _error(client.post("/api/relay/signed", json=just_short)) == (422, "deadline_too_soon")
    past = signed_body(trader, position_id, deadline=str(latest - 1))
    assert _error(client.post("/api/relay/signed", json=past)) == (422, "request_expired")
    assert service.journal.all() == []
    assert _spent(chain, relay_accounts) == before  # nothing signed, nothing paid

    # The margin is a minimum, not a window: a deadline at it or beyond is relayed and mined.
    enough = signed_body(trader, position_id, deadline=str(_latest_timestamp(chain) + MARGIN_S + 60))
    accepted = client.post("/api/relay/signed", json=enough)
    assert accepted.status_code == 202, accepted.text
    service.tick()
    record = service.journal.get(accepted.json()["id"])
    assert record is not None
    assert record.status in (TxStatus.MINED, TxStatus.CONFIRMED)


def test_the_margin_is_a_setting(
    chain: Chain,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    strict = http_client(make_service(min_deadline_margin_s=3_600, request_ttl_s=7_200))
    body = signed_body(trader, position_id, deadline=str(_latest_timestamp(chain) + 600))
    response = strict.post("/api/relay/signed", json=body)
    assert _error(response) == (422, "deadline_too_soon")
    assert response.json()["error"]["details"]["minMarginS"] == 3_600


@pytest.fixture
def block_times(chain: Chain) -> Iterator[None]:
    """anvil mining a block every second (what `anvil --block-time 1` does), as the attack was measured;
    automine again afterwards, before the snapshot is reverted."""
    with chain.lock:
        chain.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
        chain.w3.provider.make_request("evm_setIntervalMining", [1])  # type: ignore[arg-type]
    try:
        yield
    finally:
        with chain.lock:
            chain.w3.provider.make_request("evm_setIntervalMining", [0])  # type: ignore[arg-type]
            chain.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]


@pytest.mark.only_backend("anvil")
def test_with_block_times_a_deadline_at_the_latest_block_costs_the_relayer_nothing(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
    block_times: None,
) -> None:
    """anvil only: blocks every second, so the latest block's time is always behind the next one's."""
    trader = accounts[1]
    position_id = open_position(owner=trader)
    before = _spent(chain, relay_accounts)
    for _ in range(3):  # "repeatable every block": each attempt is refused
        body = signed_body(trader, position_id, deadline=str(_latest_timestamp(chain)))
        assert _error(client.post("/api/relay/signed", json=body)) == (422, "deadline_too_soon")
        time.sleep(1)
    assert service.journal.all() == []
    assert _spent(chain, relay_accounts) == before

    # A deadline past the margin survives the wait for the next block: mined, not expired.
    body = signed_body(trader, position_id, deadline=str(_latest_timestamp(chain) + MARGIN_S + 5))
    accepted = client.post("/api/relay/signed", json=body)
    assert accepted.status_code == 202, accepted.text
    for _ in range(20):  # bounded: a block comes every second
        service.tick()
        record = service.journal.get(accepted.json()["id"])
        assert record is not None
        if record.status.is_settled:
            break
        time.sleep(0.5)
    assert record.status in (TxStatus.MINED, TxStatus.CONFIRMED)


def test_a_margin_no_shorter_than_the_typed_data_ttl_is_refused_at_start() -> None:
    """Typed data built with the default deadline would carry requests the relay itself refuses."""
    with pytest.raises(ConfigurationError, match="request_ttl_s must be above min_deadline_margin_s"):
        RelaySettings(min_deadline_margin_s=600, request_ttl_s=600)
