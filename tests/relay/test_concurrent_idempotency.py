"""One Idempotency-Key, one body, many concurrent requests: every one gets the first request's record.

Ten copies of a signed close race through the relay at once (one event loop, as a server runs them). Before
the first is journaled none of them finds the key, so each goes on to check the request against the chain and
to insert; the losers must come back with the winner's record, never with the error their own late check met
(`duplicate_request`, `invalid_nonce` once the winner is mined, `position_not_found` once it closed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount

from relayer.domain.typed_data import parse_signed_relay
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import Submission
from tests.blocking import Blocking
from tests.relay.conftest import settle

COPIES = 10


def test_concurrent_copies_of_one_keyed_request_all_get_its_record(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    service: Blocking[RelayService],
    signed_body: Callable[..., dict[str, Any]],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader, size="1")
    relay = parse_signed_relay(signed_body(trader, position_id))  # a close of everything

    async def race() -> list[Submission | BaseException]:
        inner = service.inner
        calls = [inner.submit_signed(relay, idempotency_key="close-once") for _ in range(COPIES)]
        return await asyncio.gather(*calls, return_exceptions=True)

    answers = service.portal.call(race)
    errors = [answer for answer in answers if isinstance(answer, BaseException)]
    assert errors == []
    submissions = [answer for answer in answers if isinstance(answer, Submission)]
    assert len({s.record.id for s in submissions}) == 1
    assert sum(s.created for s in submissions) == 1
    settle(service)
    assert len(service.list()) == 1

    # After it mined (the position is gone, the request's nonce used), a retry still gets the same record.
    again = service.submit_signed(relay, idempotency_key="close-once")
    assert (again.record.id, again.created) == (submissions[0].record.id, False)
