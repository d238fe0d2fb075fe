"""`RelayNode`'s fee suggestion: the node's priority fee (`eth_maxPriorityFeePerGas`), asked once per block,
the default tip when the node lacks the method; on the in-process chain, with the node's answer scripted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from web3.exceptions import MethodUnavailable
from web3.types import RPCResponse

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.node import RelayNode
from relayer.constants import BASE_FEE_MULTIPLIER, DEFAULT_PRIORITY_FEE_WEI
from relayer.domain.blocks import ChainHead
from relayer.domain.fees import Fees
from relayer.errors import ChainUnavailableError

pytestmark = pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)

GWEI = 10**9


@pytest.fixture
def asked(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[str]]:
    """Script the node's answer to `eth_maxPriorityFeePerGas` (a value, or an exception to raise); returns the
    log of those requests."""

    def _script(answer: Any) -> list[str]:
        log: list[str] = []
        real = chain.w3.manager.request_blocking

        def request_blocking(method: str, params: Any, *args: Any, **kwargs: Any) -> Any:
            if method != "eth_maxPriorityFeePerGas":
                return real(method, params, *args, **kwargs)  # type: ignore[arg-type]
            log.append(method)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        monkeypatch.setattr(chain.w3.manager, "request_blocking", request_blocking)
        return log

    return _script


def test_relayed_fees_tip_what_the_node_suggests_once_per_block(
    chain: Chain, deployment: Deployment, asked: Callable[[Any], list[str]]
) -> None:
    log = asked(hex(3 * GWEI))
    node = RelayNode(chain, deployment.address)
    head = ChainHead(number=10, timestamp=1, base_fee_wei=7 * GWEI)
    assert node.fees(head) == Fees(BASE_FEE_MULTIPLIER * 7 * GWEI + 3 * GWEI, 3 * GWEI)
    assert node.fees(head) == node.fees(head)
    assert len(log) == 1  # cached for the block
    node.fees(ChainHead(number=11, timestamp=2, base_fee_wei=7 * GWEI))
    assert len(log) == 2  # asked again for the next one


def test_a_node_without_the_method_gets_the_default_tip(
    chain: Chain, deployment: Deployment, asked: Callable[[Any], list[str]]
) -> None:
    message = "the method eth_maxPriorityFeePerGas does not exist"
    response: RPCResponse = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": message}}
    asked(MethodUnavailable(message, rpc_response=response))
    node = RelayNode(chain, deployment.address)
    fees = node.fees(ChainHead(number=10, timestamp=1, base_fee_wei=GWEI))
    assert fees.max_priority_fee_per_gas_wei == DEFAULT_PRIORITY_FEE_WEI


def test_a_malformed_suggestion_means_the_node_is_unavailable(
    chain: Chain, deployment: Deployment, asked: Callable[[Any], list[str]]
) -> None:
    asked(None)
    node = RelayNode(chain, deployment.address, backoff_s=0.0)
    with pytest.raises(ChainUnavailableError):
        node.fees(ChainHead(number=10, timestamp=1, base_fee_wei=GWEI))


def test_the_relay_reads_the_same_head_as_the_builder(chain: Chain, deployment: Deployment) -> None:
    head = RelayNode(chain, deployment.address).head()
    block = chain.w3.eth.get_block("latest")
    assert head == ChainHead(block["number"], block["timestamp"], block["baseFeePerGas"])
