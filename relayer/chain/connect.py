"""Connections to a chain: the embedded eth-tester (py-evm) chain in-process, or any JSON-RPC node.

Everything above this module talks to a `Chain`; which backend sits behind it is decided once, at the edge.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.types import RPCEndpoint

from relayer.chain.jsonrpc import RpcPort
from relayer.constants import EMBEDDED_CHAIN_NAME

EMBEDDED_ACCOUNT_COUNT = 10
"""eth-tester funds the accounts of private keys 1..10 (the well-known test keys) with 1,000,000 ETH each."""

ANVIL_DEFAULT_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)
"""Keys of anvil's first accounts (its default test mnemonic), funded with 10,000 ETH each."""


def embedded_keys() -> list[str]:
    """The well-known private keys of the embedded chain's funded accounts (public test keys, never real)."""
    return ["0x" + i.to_bytes(32, "big").hex() for i in range(1, EMBEDDED_ACCOUNT_COUNT + 1)]


@dataclass(frozen=True)
class TopCall:
    """How a mined transaction's top call ended, as a trace tells it.

    `error` is None when it succeeded, else the EVM's reason ("execution reverted", "out of gas" or the like);
    `output` is its return data, or its revert data when it reverted.
    """

    error: str | None
    output: bytes


@dataclass
class Chain:
    """A web3 connection plus what tests and demos need to drive it (snapshots, test accounts)."""

    w3: Web3
    name: str
    tester: Any = None
    test_keys: list[str] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: secrets.token_hex(8))
    """Random, made with this object. The embedded chain lives exactly as long as its object, so for it this
    names the chain itself: the journal keeps it to tell a live embedded chain's records from those of an
    earlier run, which no chain id or genesis hash can (both repeat from run to run)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    """Held by every user of `w3` on the embedded chain: py-evm is not thread-safe. The relayer's own calls go
    through `relayer.chain.embedded_rpc.EmbeddedRpc`, which takes it; tests and scripts driving `w3`
    directly while a relayer runs take it too."""

    @property
    def is_embedded(self) -> bool:
        return self.tester is not None

    def test_accounts(self) -> list[LocalAccount]:
        """Funded accounts with publicly known keys (embedded chain or anvil); empty on other nodes."""
        return [Account.from_key(key) for key in self.test_keys]

    def snapshot(self) -> Any:
        """Remember the chain state; `revert(snapshot)` returns to it (eth-tester and anvil)."""
        if self.tester is not None:
            return self.tester.take_snapshot()
        return self.w3.provider.make_request(RPCEndpoint("evm_snapshot"), [])["result"]

    def revert(self, snapshot_id: Any) -> None:
        if self.tester is not None:
            self.tester.revert_to_snapshot(snapshot_id)
            return
        self.w3.provider.make_request(RPCEndpoint("evm_revert"), [snapshot_id])

    def replay_in_block(self, tx_hash: str, block_number: int) -> TopCall | None:
        """Re-execute a mined transaction of the embedded chain where it ran, and say how its top call ended.

        py-evm keeps no trace of a mined transaction, so its block is re-executed the way py-evm imports
        one: on the state before the block, in the block's own context (number, timestamp, base fee,
        coinbase), the block's pre-processing first (beacon roots, history storage), then its transactions in
        order up to this one. The state is a throwaway: nothing reaches the chain. Callers hold the chain's
        lock (py-evm is not thread-safe). None when block `block_number` does not hold the transaction.

        Raises:
            TypeError: the chain is not the embedded one.
        """
        if self.tester is None:
            raise TypeError("only the embedded chain re-executes transactions in process")
        from eth.exceptions import Revert

        evm = self.tester.backend.chain
        block = evm.get_canonical_block_by_number(block_number)
        wanted = bytes.fromhex(tx_hash.removeprefix("0x"))
        index = next((i for i, tx in enumerate(block.transactions) if tx.hash == wanted), None)
        if index is None:
            return None
        parent = evm.get_block_header_by_hash(block.header.parent_hash)
        vm = evm.get_vm(at_header=block.header.copy(state_root=parent.state_root, gas_used=0))
        vm.block_preprocessing(block)
        for earlier in block.transactions[:index]:
            vm.state.apply_transaction(earlier)
        computation = vm.state.apply_transaction(block.transactions[index])
        if not computation.is_error:
            return TopCall(None, bytes(computation.output))
        error = computation.error
        reason = "execution reverted" if isinstance(error, Revert) else type(error).__name__
        return TopCall(reason, bytes(computation.output))

    def advance_time(self, seconds: int) -> None:
        """Move the next block's timestamp forward (for staleness and deadline tests and demos)."""
        if self.tester is not None:
            latest = self.w3.eth.get_block("latest")["timestamp"]
            self.tester.time_travel(int(latest) + seconds)
            return
        self.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
        self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])


def embedded_chain() -> Chain:
    """A fresh in-process py-evm chain with ten funded, well-known accounts."""
    from eth_tester import EthereumTester, PyEVMBackend

    tester = EthereumTester(PyEVMBackend())
    return Chain(Web3(EthereumTesterProvider(tester)), EMBEDDED_CHAIN_NAME, tester, embedded_keys())


def rpc_chain(url: str, *, timeout_s: float = 10.0, test_keys: list[str] | None = None) -> Chain:
    """A JSON-RPC node over HTTP (anvil, geth, a testnet)."""
    provider = HTTPProvider(url, request_kwargs={"timeout": timeout_s})
    return Chain(Web3(provider), url, None, list(test_keys or []))


def chain_port(chain: Chain) -> RpcPort:
    """The chain port for `chain`: the embedded chain in process, else its node over HTTP (batched)."""
    from relayer.chain.embedded_rpc import EmbeddedRpc
    from relayer.chain.jsonrpc import JsonRpcTransport

    if chain.is_embedded:
        return EmbeddedRpc(chain)
    return JsonRpcTransport(chain.name)
