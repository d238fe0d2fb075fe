"""A real uvicorn server in a thread of the test process, for tests that need real sockets (slow bodies,
connection caps, MCP over HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
import uvicorn
from eth_account.signers.local import LocalAccount

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment, deploy_vault
from relayer.chain.transact import send
from relayer.constants import RELAYER_RIGHTS, SIZE_DECIMALS
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.units import to_fixed

START_TIMEOUT_S = 30.0


def long_with_relayers(chain: Chain, signers: list[LocalAccount]) -> tuple[Deployment, LocalAccount, bytes]:
    """A fresh vault on `chain` where trader 1 granted `signers` the relayer's rights (`RELAYER_RIGHTS`) and
    holds a 0.42 BTC long: (the deployment, the trader, the position id) for an app served with those
    signers."""
    deployer, trader = chain.test_accounts()[:2]
    deployment = deploy_vault(chain.w3, deployer)
    for signer in signers:
        grant = calldata.set_operator_rights(signer.address, RELAYER_RIGHTS, 0)
        send(chain.w3, trader, deployment.address, grant)
    size = to_fixed(Decimal("0.42"), SIZE_DECIMALS, "size")
    receipt = send(
        chain.w3,
        trader,
        deployment.address,
        calldata.encode_call("openPosition", symbol_to_bytes32("BTCUSDT"), True, size, 0),
    )
    return deployment, trader, bytes(receipt["logs"][0]["topics"][1])


@contextmanager
def serving(config: uvicorn.Config) -> Iterator[uvicorn.Server]:
    """Serve `config` until the block ends; fails the test if the server does not start in time."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=15)
