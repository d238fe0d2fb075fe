"""The suite's isolation itself: a snapshot revert also undoes `advance_time`, on both backends.

If anvil kept its evm_increaseTime offset after evm_revert, every test after a staleness test would meet stale
prices; this pins the behaviour the autouse snapshot/revert fixture relies on.
"""

from __future__ import annotations

from collections.abc import Callable

from eth_account.signers.local import LocalAccount

from relayer.chain.connect import Chain
from relayer.constants import DEFAULT_MAX_PRICE_AGE_S
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from tests.conftest import units
from tests.contracts.conftest import Transact

DAY_S = 86_400


def test_revert_undoes_advance_time(
    chain: Chain,
    transact: Transact,
    deployer: LocalAccount,
    trader: LocalAccount,
    now: Callable[[], int],
) -> None:
    before = now()
    snapshot = chain.snapshot()
    chain.advance_time(DAY_S)
    moved = transact(deployer, calldata.encode_call("setPrice", symbol_to_bytes32("BTCUSDT"), 1))
    assert chain.w3.eth.get_block(moved["blockNumber"])["timestamp"] >= before + DAY_S
    chain.revert(snapshot)
    assert now() == before

    # The next mined block is back on the original clock: prices set at deployment are fresh again.
    receipt = transact(
        trader, calldata.encode_call("openPosition", symbol_to_bytes32("BTCUSDT"), True, units("1"), 0)
    )
    mined_at = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert before <= mined_at < before + DEFAULT_MAX_PRICE_AGE_S
