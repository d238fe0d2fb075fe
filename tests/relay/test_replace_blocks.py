"""Replacement after a number of blocks at the block time measured from the heads the rounds read.

A transaction the node lost (dropped from its pool, as an evicted one is) gets no receipt while blocks go by;
it is replaced after `replace_after_blocks` blocks at the measured block time (at least
`replace_after_min_s`; per-chain overrides), not after a fixed 30 s. A chain whose head does not move on its
own (automine: blocks only come with transactions) has no block time: `replace_after_s` applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.types import RPCEndpoint, TxReceipt

from relayer.chain.connect import Chain
from relayer.domain import calldata
from relayer.domain.blocks import ChainHead
from relayer.domain.status import AttemptKind, TxStatus
from relayer.services.relay.pace import PACE_MIN_SAMPLES, BlockPace
from relayer.services.relay.service import RelayService
from tests.blocking import Blocking
from tests.conftest import units
from tests.relay.conftest import FakeClock, settle

pytestmark = pytest.mark.only_store("sqlite")  # timing of replacement: the database plays no part

BLOCK_TIME_S = 2


def _rpc(chain: Chain, method: str, *params: Any) -> Any:
    return chain.w3.provider.make_request(RPCEndpoint(method), list(params))


@contextmanager
def _held_back(chain: Chain) -> Iterator[Callable[[], None]]:
    """Automine off; yields `lose()`, which drops every transaction from the node's pool (as a node that
    evicted them: no receipt will ever come for their hashes)."""
    with chain.lock:
        if chain.is_embedded:
            chain.tester.disable_auto_mine_transactions()
        else:
            _rpc(chain, "evm_setAutomine", False)
        snapshot = chain.snapshot() if chain.is_embedded else None

    def lose() -> None:
        with chain.lock:
            if chain.is_embedded:
                chain.revert(snapshot)  # the pending block goes with it
                chain.tester.disable_auto_mine_transactions()
            else:
                _rpc(chain, "anvil_dropAllTransactions")

    try:
        yield lose
    finally:
        with chain.lock:
            if chain.is_embedded:
                chain.tester.enable_auto_mine_transactions()
            else:
                _rpc(chain, "evm_setAutomine", True)


def _mine(chain: Chain, *, after_s: int | None = None) -> None:
    """One block (`after_s` seconds after the latest one's timestamp, when given)."""
    with chain.lock:
        latest = int(chain.w3.eth.get_block("latest")["timestamp"])
        if chain.is_embedded:
            if after_s is None:
                chain.tester.mine_blocks()
            else:
                chain.tester.time_travel(latest + after_s + 1)  # it mines the block before that time
        else:
            _rpc(chain, "evm_mine", *([] if after_s is None else [latest + after_s]))


def _close(
    accounts: list[LocalAccount],
    signer: LocalAccount,
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
) -> bytes:
    trader = accounts[1]
    transact(trader, calldata.set_operator(signer.address, True))
    return calldata.close_position(open_position(owner=trader, size="1"), units("0.1"), 0)


@pytest.mark.parametrize(
    ("overrides", "due_s"),
    [
        ({"replace_after_blocks": 3, "replace_after_min_s": 1}, 3 * BLOCK_TIME_S),
        ({"replace_after_blocks_by_chain": "here:5"}, 5 * BLOCK_TIME_S),
        ({"replace_after_min_s_by_chain": "here:20"}, 20),  # a floor for this chain above 3 blocks
    ],
    ids=["3-blocks", "chain-blocks", "chain-floor"],
)
def test_a_lost_transaction_is_replaced_after_n_blocks_not_30_s(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    clock: FakeClock,
    overrides: dict[str, Any],
    due_s: int,
) -> None:
    signer = relay_accounts[0]
    close = _close(accounts, signer, transact, open_position)
    chain_id = str(chain.w3.eth.chain_id)
    settings = {k: v.replace("here", chain_id) if isinstance(v, str) else v for k, v in overrides.items()}
    service = make_service(signers=[signer], **settings)
    service.resume()
    with _held_back(chain) as lose:
        record = service.submit_call(close).record
        lose()
        for _ in range(PACE_MIN_SAMPLES + 1):  # blocks go by, 2 s apart, and no receipt comes
            _mine(chain, after_s=BLOCK_TIME_S)
            service.tick()
        assert service.rounds.pace.block_time_ms == BLOCK_TIME_S * 1_000
        assert len(service.get(record.id).attempts) == 1

        clock.advance(due_s - 1)
        service.tick()
        assert len(service.get(record.id).attempts) == 1  # not yet due
        clock.advance(1)
        service.tick()
        first, bump = service.get(record.id).attempts
        assert bump.kind is AttemptKind.BUMP
        assert due_s < service.settings.replace_after_s  # well before the old fixed 30 s
        _mine(chain)
    settle(service)
    final = service.get(record.id)
    assert final.status is TxStatus.CONFIRMED
    assert final.mined is not None
    assert final.mined.tx_hash == bump.tx_hash
    assert final.hashes == [first.tx_hash, bump.tx_hash]


def test_without_a_block_time_replace_after_s_applies(
    chain: Chain,
    accounts: list[LocalAccount],
    relay_accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
    make_service: Callable[..., Blocking[RelayService]],
    clock: FakeClock,
) -> None:
    """As on an automine chain with no other traffic: the head does not move, so no block time is known."""
    signer = relay_accounts[0]
    close = _close(accounts, signer, transact, open_position)
    service = make_service(
        signers=[signer], replace_after_blocks=1, replace_after_min_s=1, replace_after_s=30
    )
    service.resume()
    with _held_back(chain) as lose:
        record = service.submit_call(close).record
        lose()
        for _ in range(PACE_MIN_SAMPLES + 1):
            clock.advance(5)
            service.tick()
        assert service.rounds.pace.block_time_ms is None
        assert len(service.get(record.id).attempts) == 1  # 25 s: 1 block would be due long ago
        clock.advance(5)
        service.tick()
        assert [a.kind for a in service.get(record.id).attempts] == [AttemptKind.ORIGINAL, AttemptKind.BUMP]
        _mine(chain)
    settle(service)
    assert service.get(record.id).status is TxStatus.CONFIRMED


def _heads(*pairs: tuple[int, int]) -> BlockPace:
    pace = BlockPace()
    for number, timestamp in pairs:
        pace.observe(ChainHead(number, timestamp, None))
    return pace


def test_the_block_time_is_the_median_gap_per_block_of_the_heads_seen() -> None:
    steady = _heads((10, 100), (11, 102), (13, 106), (14, 108), (20, 120))
    assert steady.block_time_ms == 2_000  # per block, whatever the number of blocks between two reads
    assert steady.wait_ms(3) == 6_000
    assert _heads((10, 100), (11, 101), (12, 102)).block_time_ms is None  # too few moves yet
    quarter = _heads((1, 100), (5, 101), (9, 102), (13, 103), (17, 104))
    assert quarter.block_time_ms == 250
    # Automine: blocks come with transactions, many in one second: no block time of its own.
    burst = _heads((1, 100), (4, 100), (9, 100), (12, 101), (30, 101), (31, 101))
    assert burst.block_time_ms is None
    assert burst.wait_ms(3) is None
    # One stall does not move the median; a head seen again adds nothing.
    stalled = _heads((1, 100), (2, 102), (2, 102), (3, 104), (4, 160), (5, 162), (6, 164))
    assert stalled.block_time_ms == 2_000
    # A head behind the last one (a reorg, another node) restarts from it rather than counting back.
    back = _heads((10, 100), (11, 102), (12, 104), (8, 90), (9, 92), (10, 94))
    assert back.block_time_ms == 2_000  # 2 samples before, 2 after: none from 12 back to 8
