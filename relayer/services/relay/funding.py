"""Which relayer signer pays for a call, and what operators see of every signer.

A call goes to the next signer in the rotation whose balance covers its worst case (every unit of gas at the
fee cap), signers no task is sending with first (a signer busy with a slow node or a refusal would hold the
call behind its lock); a signer that cannot pay is skipped, and when none can the error lists every balance it
saw.
"""

from __future__ import annotations

from collections.abc import Callable

from relayer.chain.client import ChainClient
from relayer.domain import policy
from relayer.domain.fees import gas_limit_with_margin
from relayer.errors import RelayerOutOfFundsError, SignerUnavailableError
from relayer.services.relay.nonces import NonceAllocator
from relayer.services.relay.signers import Signer, SignerPool
from relayer.services.relay.values import SignerStatus
from relayer.stores.journal_port import Journal


def free_first(pool: SignerPool, nonces: NonceAllocator, held: Callable[[str], bool]) -> list[Signer]:
    """The rotation with the signers whose lease this instance holds first (it sends for them at once; the
    others' calls wait as intents for their holder), then those no task holds; in turn within each. Signers
    stopped for being in use by another journal are left out.

    Raises:
        SignerUnavailableError: every signer is stopped.
    """
    rotation = [signer for signer in pool.rotation() if nonces.stopped(signer.address) is None]
    if not rotation:
        raise SignerUnavailableError(
            "every relayer signer is in use by another journal and was stopped (see /health)",
            signers={address: nonces.stopped(address) for address in pool.addresses},
        )
    # stable: the turn is kept within each group
    return sorted(rotation, key=lambda signer: (not held(signer.address), nonces.busy(signer.address)))


async def funded_signer(
    chain: ChainClient,
    pool: SignerPool,
    nonces: NonceAllocator,
    held: Callable[[str], bool],
    gas_limit: int,
    price_cap_wei: int,
) -> Signer:
    """The next signer (round-robin) whose balance covers `gas_limit` gas at the cap.

    Raises:
        RelayerOutOfFundsError: no signer can pay for it.
    """
    shortfall: dict[str, str] = {}
    for signer in free_first(pool, nonces, held):
        balance = await chain.balance(signer.address)
        if balance >= gas_limit * price_cap_wei:
            return signer
        shortfall[signer.address] = str(balance)
    raise RelayerOutOfFundsError("no relayer signer can pay for this transaction", balancesWei=shortfall)


async def pick_signer(
    chain: ChainClient,
    pool: SignerPool,
    nonces: NonceAllocator,
    held: Callable[[str], bool],
    vault: str,
    data: bytes,
    price_cap_wei: int,
) -> tuple[Signer, int]:
    """The next signer (round-robin) whose balance covers the worst-case cost, and the gas limit: each
    signer's balance and simulation (`eth_estimateGas` from it) asked in one batch.

    Raises:
        RelayerOutOfFundsError: no signer can pay for it.
        RelayerError: the vault error the simulation reverted with; node unreachable.
    """
    shortfall: dict[str, str] = {}
    for signer in free_first(pool, nonces, held):
        try:
            # Estimation is the simulation: a revert raises the decoded vault error, nothing is signed.
            balance, estimate = await chain.balance_and_estimate(signer.address, vault, data)
        except RelayerOutOfFundsError as error:
            shortfall[signer.address] = str(error.details.get("balanceWei", "0"))
            continue
        gas_limit = gas_limit_with_margin(estimate)
        if balance >= gas_limit * price_cap_wei:  # the worst case: every unit of gas at the cap
            return signer, gas_limit
        shortfall[signer.address] = str(balance)
    raise RelayerOutOfFundsError("no relayer signer can pay for this transaction", balancesWei=shortfall)


async def signers_status(
    chain: ChainClient, pool: SignerPool, journal: Journal, nonces: NonceAllocator, min_balance_wei: int
) -> list[SignerStatus]:
    """Balances and nonces (chain latest / pending vs the journal's next) of every signer."""
    summary = journal.nonce_summary()
    statuses = []
    for address in pool.addresses:
        balance = await chain.balance(address)
        top, live = summary.get(address, (-1, 0))
        pending_nonce = await chain.nonce(address, "pending")
        statuses.append(
            SignerStatus(
                address=address,
                balance_wei=balance,
                low_balance=policy.is_low_balance(balance, min_balance_wei),
                chain_latest_nonce=await chain.nonce(address, "latest"),
                chain_pending_nonce=pending_nonce,
                journal_next_nonce=max(top + 1, nonces.floor(address)),
                in_flight=live,
                stopped=nonces.stopped(address),
            )
        )
    return statuses
