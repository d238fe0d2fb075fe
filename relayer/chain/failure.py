"""Why a mined transaction reverted, read at its own place in its block.

An earlier transaction of the same block (another close of the same position, say) may be what made it
revert, and a call replayed on the state before the block would then succeed. So, first that applies:

1. A trace of the transaction (`debug_traceTransaction`, call tracer, top call only): anvil, geth, erigon,
   reth and nethermind have it, and the embedded chain answers it by re-executing the block in process up
   to the transaction. A node that says the method does not exist is never asked again.
2. Without a trace: the call replayed with `eth_call` on the state before the block, but only when the
   transaction was its block's first (index 0), where that state is the one it met (the replay runs in the
   previous block's context: a revert that depends on the block's number or time may not reproduce).
   Anywhere else there is no honest replay, and the error says so.

Revert data is decoded by selector (`relayer.chain.revert`), like every revert. An answer that cannot tell
still fails the record, with an error that says so: raising instead would leave the record `submitted` and
fail every round. Only an unreachable node raises (`ChainUnavailableError`: the loop settles it later).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relayer.chain.client import ChainClient, Receipt
from relayer.chain.revert import error_from_revert, error_from_rpc_error
from relayer.domain.records import RelayRecord
from relayer.errors import ExecutionRevertedError, RelayerError


async def why_reverted(chain: ChainClient, receipt: Receipt, record: RelayRecord) -> RelayerError:
    """The error `record`'s mined, reverted transaction `receipt` met (see the module's docstring)."""
    trace, no_trace = await chain.trace_top_call(receipt.mined.tx_hash)
    if trace is not None:
        top = _top_call(trace)
        if top is not None:
            return top
        no_trace = "the node's trace is not a call trace"
    if receipt.transaction_index > 0:
        return ExecutionRevertedError(
            f"reverted on chain; no trace tells why ({no_trace}), and a replay on the state before its block"
            " would miss the earlier transactions of that block",
            transactionIndex=receipt.transaction_index,
            traceError=no_trace,
        )
    block = max(receipt.mined.block_number - 1, 0)
    reply = await chain.call_at(record.sender, record.to, record.data, record.gas_limit, block)
    if reply.error is None:
        return ExecutionRevertedError("reverted on chain (the replay did not reproduce it)")
    error = error_from_rpc_error(reply.error)
    if error.code == "chain_unavailable":  # pruned state, an unfunded sender, out of gas...: not a revert
        return ExecutionRevertedError(
            "reverted on chain; the node answered its replay with an error that is not a revert",
            nodeMessage=str(reply.error.get("message", ""))[:300],
        )
    return error


def _top_call(trace: Any) -> RelayerError | None:
    """The error a call tracer's top call (`{"type", "output", "error", ...}`) tells; None for anything that
    is not a call trace."""
    if not isinstance(trace, Mapping) or not isinstance(trace.get("type"), str):
        return None
    reason, output = trace.get("error"), trace.get("output") or "0x"
    if not (reason is None or isinstance(reason, str)) or not isinstance(output, str):
        return None
    try:
        data = bytes.fromhex(output.removeprefix("0x"))
    except ValueError:
        return None
    if reason is None:
        return ExecutionRevertedError("the receipt says reverted, yet its trace shows the call succeeding")
    if data:
        return error_from_revert(data)
    return ExecutionRevertedError(f"reverted on chain without revert data: {reason}", evmError=reason)
