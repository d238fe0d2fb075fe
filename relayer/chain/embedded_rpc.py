"""The in-process eth-tester (py-evm) chain, answering JSON-RPC calls as a node would.

`EmbeddedRpc` is the second adapter of the chain port `relayer.chain.jsonrpc.RpcPort`, beside the HTTP one.
Its replies are what a node sends on the wire: quantities and byte strings as 0x-hex, blocks, receipts and
logs with camelCase keys, errors as JSON-RPC error objects (a revert as code 3 with its revert data). So the
same decoding code serves both adapters, and the relayer cannot tell them apart.

py-evm is not thread-safe, so every batch runs as one job on a single worker thread owned by the adapter,
holding `Chain.lock` for the whole job: tests and scripts that drive `chain.w3` directly hold the same lock,
and are serialized with the relayer's calls.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from web3.exceptions import Web3RPCError
from web3.types import RPCEndpoint

from relayer.chain.connect import Chain
from relayer.chain.jsonrpc import RpcCall, RpcReply
from relayer.chain.node_errors import node_message
from relayer.chain.revert import revert_data
from relayer.errors import ChainUnavailableError

_NODE_ERROR = -32000
"""The JSON-RPC code geth uses for a refused transaction and most other server errors."""
_METHOD_NOT_FOUND = -32601
_EXECUTION_REVERTED = 3
_LOGS_BLOOM_BYTES = 256
_NON_STANDARD_KEYS = frozenset({"state_root"})
"""eth-tester extras no node sends (a receipt's `state_root` is a placeholder byte)."""
_SNAKE = re.compile(r"_([a-z0-9])")


class EmbeddedRpc:
    """JSON-RPC calls answered by the embedded chain of `chain`, one batch at a time, in order."""

    def __init__(self, chain: Chain) -> None:
        if chain.tester is None:
            raise TypeError(
                "EmbeddedRpc serves the embedded chain only; a node is served by JsonRpcTransport"
            )
        self.chain = chain
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eth-tester")
        self._closed = False
        # eth-tester makes an eth_call's sender pay for its gas, so a funded account stands in for the zero
        # address nodes use when a call names no sender.
        with chain.lock:
            self._default_sender: str = chain.tester.get_accounts()[0]
        self.batches_answered = 0
        self.calls_answered = 0

    async def batch(self, calls: Sequence[RpcCall]) -> list[RpcReply]:
        """The replies to `calls`, in order; per-call errors are in the replies, not raised.

        Raises:
            ChainUnavailableError: the adapter was closed.
        """
        if self._closed:
            raise ChainUnavailableError("the embedded chain's adapter is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._answer_all, list(calls))

    async def aclose(self) -> None:
        """Stop taking batches; batches already queued are still answered. Idempotent."""
        self._closed = True
        self._executor.shutdown(wait=False)

    # --- the worker thread --------------------------------------------------------------------------------

    def _answer_all(self, calls: list[RpcCall]) -> list[RpcReply]:
        with self.chain.lock:
            replies = [self._answer(call) for call in calls]
            self.batches_answered += 1
            self.calls_answered += len(calls)
        return replies

    def _answer(self, call: RpcCall) -> RpcReply:
        if call.method == "debug_traceTransaction":
            return self._trace(call.params)
        try:
            result = self._request(call.method, call.params)
        except Exception as exc:  # the node's refusal, answered as its error object
            return RpcReply(error=_error_object(exc))
        if call.method == "eth_getLogs":
            return RpcReply(result=[_log(entry) for entry in result])
        return RpcReply(result=_wire(result))

    def _request(self, method: str, params: list[Any]) -> Any:
        params = list(params)
        first = params[0] if params and isinstance(params[0], Mapping) else {}
        if method in {"eth_call", "eth_estimateGas"} and first and first.get("from") is None:
            params[0] = {**first, "from": self._default_sender}
        elif method == "eth_getLogs" and isinstance(first.get("address"), str):
            params[0] = {**first, "address": [first["address"]]}  # web3 chokes on one address: a list of one
        return self.chain.w3.manager.request_blocking(RPCEndpoint(method), params)

    def _trace(self, params: list[Any]) -> RpcReply:
        """geth's call tracer, top call only, for a mined transaction: re-executed where it ran."""
        tx_hash = params[0] if params else None
        try:
            receipt = self._request("eth_getTransactionReceipt", [tx_hash])
        except Exception as exc:
            return RpcReply(error=_error_object(exc))
        if receipt is None or receipt.get("blockNumber") is None or not isinstance(tx_hash, str):
            return RpcReply(error={"code": _NODE_ERROR, "message": "transaction not found"})
        try:
            top = self.chain.replay_in_block(tx_hash, int(receipt["blockNumber"]))
        except Exception as exc:  # py-evm refused to re-execute the block
            message = f"replay failed: {type(exc).__name__}: {exc}"[:300]
            return RpcReply(error={"code": _NODE_ERROR, "message": message})
        if top is None:
            return RpcReply(error={"code": _NODE_ERROR, "message": "transaction not found"})
        trace: dict[str, Any] = {"type": "CALL", "output": "0x" + top.output.hex()}
        if top.error is not None:
            trace["error"] = top.error
        return RpcReply(result=trace)


def _error_object(exc: BaseException) -> dict[str, Any]:
    """The JSON-RPC error object a node answers for what eth-tester (through web3) raised."""
    data = revert_data(exc)
    if data is not None:
        return {"code": _EXECUTION_REVERTED, "message": "execution reverted", "data": "0x" + data.hex()}
    if isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, Mapping):
        error = exc.rpc_response.get("error")
        if isinstance(error, Mapping):  # web3 already answers as a node (unknown method, ...)
            return dict(error)
    if isinstance(exc, NotImplementedError):
        return {"code": _METHOD_NOT_FOUND, "message": f"not implemented by eth-tester: {exc}"[:300]}
    code, message = node_message(exc)
    return {"code": _NODE_ERROR if code is None else code, "message": message}


def _wire(value: Any, key: str | None = None) -> Any:
    """A web3 answer as JSON-RPC sends it: quantities and bytes 0x-hex, camelCase keys, recursively."""
    if value is None or isinstance(value, bool | str | float):  # floats: eth_feeHistory's gasUsedRatio
        return value
    if isinstance(value, int):
        if key == "logsBloom":  # DATA, 256 bytes, that eth-tester hands over as a number
            return "0x" + value.to_bytes(_LOGS_BLOOM_BYTES, "big").hex()
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        wired = {}
        for name, item in value.items():
            if name in _NON_STANDARD_KEYS:
                continue
            camel = _SNAKE.sub(lambda match: match.group(1).upper(), name)
            if key == "transactions" and camel == "data":  # eth-tester's full transactions say `data`
                camel = "input"
            wired[camel] = _wire(item, camel)
        return wired
    if isinstance(value, list | tuple):
        return [_log(item) for item in value] if key == "logs" else [_wire(item, key) for item in value]
    raise TypeError(f"no JSON-RPC form for {type(value).__name__}")


def _log(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A log as nodes send it: eth-tester's `type: "mined"` becomes `removed: false`."""
    wired: dict[str, Any] = _wire({name: item for name, item in entry.items() if name != "type"})
    wired["removed"] = False
    return wired
