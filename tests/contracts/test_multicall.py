"""multicall: several vault calls in one transaction, as the caller, all or nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.contract import Contract

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader, call_chain
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.positions import TriggerOrder
from relayer.errors import InvalidTriggerPriceError, NotAuthorizedError, SizeDeltaExceedsPositionError
from tests.conftest import units, usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event_names, events, reverts, send_unchecked


def test_partial_close_and_set_take_profit_in_one_transaction(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
) -> None:
    position_id = open_position(size="1")
    receipt = transact(
        trader,
        calldata.multicall(
            [
                calldata.close_position(position_id, units("0.25"), 0),
                calldata.set_take_profit(position_id, usd("100000"), 5_000),
            ]
        ),
    )
    assert event_names(contract, receipt) == ["PositionDecreased", "TriggerSet"]
    assert (
        events(contract, receipt, "PositionDecreased")[0]["owner"] == trader.address
    )  # msg.sender preserved
    position = vault.position(position_id)
    assert position.size == units("0.75")
    assert position.take_profit == TriggerOrder(usd("100000"), 5_000)


def test_multicall_returns_each_result(
    chain: Chain, deployment: Deployment, contract: Contract, trader: LocalAccount
) -> None:
    """Results are the inner calls' return data, in order (here two fresh position ids)."""
    open_one = calldata.encode_call("openPosition", symbol_to_bytes32("BTCUSDT"), True, 1, 0)
    results = contract.functions.multicall([open_one, open_one]).call({"from": trader.address})
    chain_id = chain.w3.eth.chain_id
    assert results == [
        keccak(encode(["uint256", "address", "uint256"], [chain_id, deployment.address, n])) for n in (1, 2)
    ]


@pytest.mark.parametrize(
    ("second", "error", "details"),
    [
        (
            lambda pid: calldata.set_take_profit(pid, usd("90000"), 5_000),
            InvalidTriggerPriceError,
            {"isTakeProfit": True, "triggerPrice": "90000", "currentPrice": "96000"},
        ),
        (
            lambda pid: calldata.close_position(pid, units("5"), 0),
            SizeDeltaExceedsPositionError,
            {"sizeDelta": str(units("5")), "size": str(units("0.75"))},
        ),
    ],
    ids=["invalid-trigger-price", "size-delta-too-large"],
)
def test_a_failing_call_rolls_back_the_whole_batch_and_surfaces_its_error(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    second: Callable[[bytes], bytes],
    error: type[InvalidTriggerPriceError | SizeDeltaExceedsPositionError],
    details: dict[str, object],
) -> None:
    position_id = open_position(size="1")
    batch = calldata.multicall([calldata.close_position(position_id, units("0.25"), 0), second(position_id)])

    # Simulated (estimate / eth_call): the inner custom error comes back unchanged and decoded.
    with reverts(error, **details):
        transact(trader, batch)
    with reverts(error, **details):
        call_chain(
            lambda: chain.w3.eth.call({"from": trader.address, "to": deployment.address, "data": batch})
        )

    # Mined anyway: the transaction fails and the first call's partial close is undone with it.
    receipt = send_unchecked(chain.w3, trader, deployment.address, batch)
    assert receipt["status"] == 0
    assert receipt["logs"] == []
    assert vault.position(position_id).size == units("1")


def test_multicall_acts_as_the_caller_not_the_vault(
    transact: Transact, stranger: LocalAccount, open_position: Callable[..., bytes]
) -> None:
    """Delegate-called entries keep msg.sender: a stranger gains nothing by batching."""
    position_id = open_position()
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, calldata.multicall([calldata.close_position(position_id, units("0.1"), 0)]))
