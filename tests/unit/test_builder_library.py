"""The library API without HTTP: `relayer.build_close_transaction` on eth-tester and anvil."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
from anyio.from_thread import BlockingPortal
from eth_account.signers.local import LocalAccount
from eth_account.types import TransactionDictType
from web3.logs import DISCARD

from relayer import CloseAction, CloseRequest, TransactionBuilder, build_close_transaction
from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain, chain_port
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader
from relayer.errors import PositionNotFoundError, PriceSlippageError
from tests.blocking import Blocking


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
        chain, deployment.address, {"positionId": "0x" + position_id.hex(), "sizeDelta": "0.2"}
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


def test_a_typed_request_and_a_shared_client(
    chain: Chain, deployment: Deployment, open_position: Callable[..., bytes], portal: BlockingPortal
) -> None:
    """The library call takes a typed request too; async code shares one started `ChainClient` instead."""
    position_id = open_position()
    request = CloseRequest(position_id, size_delta=10**17, allowed_price_e8=97_000 * 10**8)
    with pytest.raises(PriceSlippageError):
        build_close_transaction(chain, deployment.address, request)
    with pytest.raises(PositionNotFoundError):
        build_close_transaction(chain, deployment.address, {"positionId": "0x" + "00" * 32})

    client = ChainClient(chain_port(chain), deployment.address)
    portal.call(client.start)
    try:
        builder = Blocking(TransactionBuilder(client), portal)
        with pytest.raises(PriceSlippageError):
            builder.build(request)
        assert client.started  # started once, then reused
        with pytest.raises(PositionNotFoundError):
            builder.build_from_json({"positionId": "0x" + "00" * 32})
        assert builder.inner.chain is client
    finally:
        portal.call(client.aclose)
