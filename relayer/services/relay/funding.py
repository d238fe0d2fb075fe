"""Which relayer signer pays for a call, and what operators see of every signer.

A call goes to the signer with the fewest transactions in flight (`SignerSlots`; the rotation among equals)
whose balance covers its worst case (every unit of gas at the fee cap), signers no task is sending with first
among equals (a signer busy with a slow node or a refusal would hold the call behind its lock); a signer that
cannot pay is skipped, and when none can the error lists every balance it saw. A signer with its limit in
flight is skipped too; when that leaves none, `SignersFull` tells the caller to wait for a slot.
"""

from __future__ import annotations

from collections.abc import Callable

from relayer.chain.client import ChainClient
from relayer.domain import policy
from relayer.domain.fees import gas_limit_with_margin
from relayer.errors import RelayerOutOfFundsError, SignerUnavailableError
from relayer.services.relay.nonces import NonceAllocator
from relayer.services.relay.signers import Signer, SignerPool, SignersFull, SignerSlots
from relayer.services.relay.values import SignerStatus
from relayer.stores.journal_port import Journal


def free_first(
    pool: SignerPool, nonces: NonceAllocator, held: Callable[[str], bool], slots: SignerSlots | None = None
) -> list[Signer]:
    """The rotation with the signers whose lease this instance holds first (it sends for them at once; the
    others' calls wait as intents for their holder), then those with the fewest in flight (`slots`), then
    those no task holds; in turn within each. Signers stopped for being in use by another journal are left
    out.

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
    return sorted(
        rotation,
        key=lambda signer: (
            not held(signer.address),
            0 if slots is None else slots.in_flight(signer.address),
            nonces.busy(signer.address),
        ),
    )


def _skip_full(signer: Signer, slots: SignerSlots | None, full: list[str]) -> bool:
    if slots is None or slots.has_room(signer.address):
        return False
    full.append(signer.address)
    return True


def _taken(signer: Signer, slots: SignerSlots | None, full: list[str]) -> bool:
    """Take a slot of `signer` (it may have filled up while its balance was read)."""
    if slots is None or slots.take(signer.address):
        return True
    full.append(signer.address)
    return False


async def funded_signer(
    chain: ChainClient,
    pool: SignerPool,
    nonces: NonceAllocator,
    held: Callable[[str], bool],
    gas_limit: int,
    price_cap_wei: int,
    slots: SignerSlots | None = None,
) -> Signer:
    """The next signer (fewest in flight, round-robin) whose balance covers `gas_limit` gas at the cap, with
    a slot of it taken in `slots` (given back by the caller).

    Raises:
        SignersFull: every signer that could pay has its limit in flight.
        RelayerOutOfFundsError: no signer can pay for it.
    """
    shortfall: dict[str, str] = {}
    full: list[str] = []
    for signer in free_first(pool, nonces, held, slots):
        if _skip_full(signer, slots, full):
            continue
        balance = await chain.balance(signer.address)
        if balance >= gas_limit * price_cap_wei:
            if _taken(signer, slots, full):
                return signer
            continue
        shortfall[signer.address] = str(balance)
    if full:
        raise SignersFull(full)
    raise RelayerOutOfFundsError("no relayer signer can pay for this transaction", balancesWei=shortfall)


async def pick_signer(
    chain: ChainClient,
    pool: SignerPool,
    nonces: NonceAllocator,
    held: Callable[[str], bool],
    vault: str,
    data: bytes,
    price_cap_wei: int,
    slots: SignerSlots | None = None,
) -> tuple[Signer, int]:
    """The next signer (fewest in flight, round-robin) whose balance covers the worst-case cost, with a slot
    of it taken in `slots` (given back by the caller), and the gas limit: each signer's balance and
    simulation (`eth_estimateGas` from it) asked in one batch.

    Raises:
        SignersFull: every signer that could pay has its limit in flight (nothing was simulated from them).
        RelayerOutOfFundsError: no signer can pay for it.
        RelayerError: the vault error the simulation reverted with; node unreachable.
    """
    shortfall: dict[str, str] = {}
    full: list[str] = []
    for signer in free_first(pool, nonces, held, slots):
        if _skip_full(signer, slots, full):
            continue
        try:
            # Estimation is the simulation: a revert raises the decoded vault error, nothing is signed.
            balance, estimate = await chain.balance_and_estimate(signer.address, vault, data)
        except RelayerOutOfFundsError as error:
            shortfall[signer.address] = str(error.details.get("balanceWei", "0"))
            continue
        gas_limit = gas_limit_with_margin(estimate)
        if balance >= gas_limit * price_cap_wei:  # the worst case: every unit of gas at the cap
            if _taken(signer, slots, full):
                return signer, gas_limit
            continue
        shortfall[signer.address] = str(balance)
    if full:
        raise SignersFull(full)
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
