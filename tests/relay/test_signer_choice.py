"""A call goes to a signer no task is sending with: one signer held up (a slow node, a refusal being handled)
does not hold up calls another signer can take."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from relayer.domain import calldata
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import Submission
from tests.blocking import Blocking
from tests.conftest import units

WAIT_S = 10.0
"""Bounds a broken run only: the call must not wait for the held signer at all."""


def test_a_call_skips_the_signer_another_task_holds(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader, size="1")
    for signer in accounts[5:7]:
        transact(trader, calldata.set_operator(signer.address, True))
    inner = service.inner
    close = calldata.close_position(position_id, units("0.1"), 0)

    async def scenario() -> tuple[str, Submission]:
        held, release = asyncio.Event(), asyncio.Event()
        busy = inner.pool.rotation()[1].address  # the signer whose turn the next call's rotation starts at

        async def hold() -> None:
            async with inner.nonces.hold(busy):
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await held.wait()
        try:
            return busy, await asyncio.wait_for(inner.submit_call(close, account=trader.address), WAIT_S)
        finally:
            release.set()
            await holder

    busy, submission = service.portal.call(scenario)
    assert submission.created
    assert submission.record.sender != busy
    assert submission.record.sender in {a.address for a in accounts[5:7]}
