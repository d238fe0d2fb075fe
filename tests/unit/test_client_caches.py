"""What `ChainClient` keeps between calls never outlives the block or the owner it was read for.

A scripted port stands for a chain that moves a block ahead on every batch, and whose tip is the block number
in wei: a close must be priced with its own block's tip (never another block's), and a signed request must be
checked against the position's owner as the chain says now, not as the client last saw it (a reorg or a
snapshot revert hands a position id to another owner)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from relayer.chain.artifact import load_artifact
from relayer.chain.client import ChainClient
from relayer.chain.jsonrpc import RpcCall, RpcReply
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32

VAULT = "0x" + "44" * 20
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
POSITION = b"\x07" * 32
_GET_POSITION = calldata.encode_call("getPositionWithPrice", POSITION)[:4]
_NONCES = calldata.encode_call("nonces", ALICE)[:4]
_ORDERS_OF = calldata.encode_call("ordersOf", POSITION)[:4]


def _word(value: int | bytes) -> bytes:
    return value.rjust(32, b"\0") if isinstance(value, bytes) else value.to_bytes(32, "big")


class MovingChain:
    """A block per batch (tip = block number wei); the position is `owner`'s; vault nonces are per owner."""

    def __init__(self) -> None:
        self.block = 0
        self.owner = ALICE
        self.request_nonces = {ALICE.lower(): 3, BOB.lower(): 9}

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        self.block += 1
        return [RpcReply(result=self._answer(call)) for call in calls]

    def _answer(self, call: RpcCall) -> object:
        if call.method == "eth_call":
            data = bytes.fromhex(call.params[0]["data"][2:])
            if data[:4] == _GET_POSITION:
                words = [_word(bytes.fromhex(self.owner[2:])), symbol_to_bytes32("BTCUSDT"), _word(1)]
                words += [_word(v) for v in (10**18, 96_000 * 10**8, 0, 0, 0, 0, 96_000 * 10**8, 1)]
                return "0x" + b"".join(words).hex()
            if data[:4] == _ORDERS_OF:  # no orders, D = 10_000
                return "0x" + (_word(64) + _word(10_000) + _word(0)).hex()
            if data[:4] == _NONCES:
                return "0x" + _word(self.request_nonces["0x" + data[-20:].hex()]).hex()
            return "0x" + _word(3600).hex()  # maxPriceAge
        answers: dict[str, object] = {
            "eth_chainId": "0x1",
            "eth_getCode": load_artifact().deployed_bytecode,
            "eth_getBlockByNumber": {"number": hex(self.block), "timestamp": "0x1", "baseFeePerGas": "0x0"},
            "eth_maxPriorityFeePerGas": hex(self.block),
            "eth_estimateGas": "0x5208",
            "eth_getTransactionCount": "0x0",
        }
        return answers[call.method]

    async def aclose(self) -> None:
        return None


def test_every_close_is_priced_with_its_own_blocks_tip() -> None:
    async def tips() -> list[tuple[int, int]]:
        client = ChainClient(MovingChain(), VAULT)
        await client.start()
        seen = []
        for _ in range(4):
            state = await client.read_close_state(POSITION, b"\x01")
            seen.append((state.head.number, state.fees.max_priority_fee_per_gas_wei))
        return seen

    for number, tip in anyio.run(tips):
        assert tip == number  # the tip of the block the close was checked against, not an earlier one's


def test_a_signed_request_is_checked_against_the_owner_the_chain_names_now() -> None:
    async def states() -> list[tuple[str, int]]:
        chain = MovingChain()
        client = ChainClient(chain, VAULT)
        await client.start()
        seen = []
        _, _, owner, nonce = await client.signed_request_state(POSITION)
        seen.append((owner, nonce))
        chain.owner = BOB  # the id now names another position (a reorg, a snapshot revert)
        _, _, owner, nonce = await client.signed_request_state(POSITION)
        seen.append((owner, nonce))
        _, _, owner, nonce = await client.signed_request_state(POSITION)
        seen.append((owner, nonce))
        return seen

    assert [(owner.lower(), nonce) for owner, nonce in anyio.run(states)] == [
        (ALICE, 3),
        (BOB, 9),  # not Alice's cached ownership, and Bob's own nonce
        (BOB, 9),
    ]
