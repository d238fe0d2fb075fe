"""The library API without HTTP: `relayer.build_close_transaction` on eth-tester and anvil."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
from eth_account.signers.local import LocalAccount
from eth_account.types import TransactionDictType
from web3.logs import DISCARD

from relayer import CloseAction, CloseRequest, Web3Gateway, build_close_transaction
from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader
from relayer.errors import PositionNotFoundError, PriceSlippageError


def test_build_sign_send_with_the_library(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    position_id = open_position(is_long=False, size="0.7")
    set_market_price("BTCUSDT", "95123.45")
    built = build_close_transaction(
        chain.w3, deployment.address, {"positionId": "0x" + position_id.hex(), "sizeDelta": "0.2"}
    )
    assert built.action is CloseAction.DECREASE
    assert built.sender == accounts[1].address
    assert built.preview.realized_pnl_e8 == 17_531_000_000  # 0.2 x 876.55 USD, a short in profit

    # eth-account signs the JSON-RPC dict as is; its annotation admits HexStr values but not plain str.
    signed = accounts[1].sign_transaction(cast(TransactionDictType, built.transaction))
    receipt = chain.w3.eth.wait_for_transaction_receipt(
        chain.w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    (event,) = vault.contract.events.PositionDecreased().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["realizedPnl"] == built.preview.realized_pnl_e8
    assert event["args"]["remainingSize"] == built.preview.size_after
    assert receipt["gasUsed"] <= built.gas_limit


def test_a_typed_request_and_a_shared_gateway(
    chain: Chain, deployment: Deployment, open_position: Callable[..., bytes]
) -> None:
    position_id = open_position()
    gateway = Web3Gateway(chain.w3, deployment.address)
    request = CloseRequest(position_id, size_delta=10**17, allowed_price_e8=97_000 * 10**8)
    with pytest.raises(PriceSlippageError):
        build_close_transaction(chain.w3, deployment.address, request, gateway=gateway)
    assert gateway.started  # started once, then reused
    with pytest.raises(PositionNotFoundError):
        build_close_transaction(
            chain.w3, deployment.address, {"positionId": "0x" + "00" * 32}, gateway=gateway
        )
