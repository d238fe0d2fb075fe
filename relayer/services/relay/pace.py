"""`BlockPace`: the chain's block time, learned from the heads the relay rounds already read.

A transaction is replaced after a number of blocks without a receipt (`replace_after_blocks`, 3 as Chainlink;
Rundler uses 2), so the relay needs the block time: the median gap per block between the heads it saw, over
the last `PACE_SAMPLES` times the head moved. No extra request: every round reads the head anyway.

A chain that makes blocks only with transactions (anvil's or eth-tester's automine) has no block time: under
load many blocks share one timestamp, so the median gap is 0 and the pace is unknown (`wait_ms` None: the
caller falls back to `replace_after_s`); when idle its head does not move, and nothing is learned.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from relayer.domain.blocks import ChainHead

PACE_SAMPLES = 32
"""How many head moves the median is taken over (at 1 s blocks, about the last half minute)."""
PACE_MIN_SAMPLES = 4
"""Head moves needed before the block time counts as known."""


def median_gap_ms(gaps_ms: list[int]) -> int:
    """The median (the lower middle one of an even count: never more than was seen).

    >>> median_gap_ms([1_000, 12_000, 1_000]), median_gap_ms([0, 0, 250, 250])
    (1000, 0)
    """
    ordered = sorted(gaps_ms)
    return ordered[(len(ordered) - 1) // 2]


@dataclass
class BlockPace:
    """Heads seen, and the block time they show."""

    _last: ChainHead | None = None
    _gaps_ms: deque[int] = field(default_factory=lambda: deque(maxlen=PACE_SAMPLES))

    def observe(self, head: ChainHead) -> None:
        """A head a round read: when it moved on, one more sample (its time per block, in ms)."""
        last = self._last
        if last is not None and head.number <= last.number:
            if head.number < last.number:  # a reorg, or another node behind a balancer: start again there
                self._last = head
            return
        self._last = head
        if last is not None:
            blocks = head.number - last.number
            self._gaps_ms.append(max(0, head.timestamp - last.timestamp) * 1_000 // blocks)

    @property
    def block_time_ms(self) -> int | None:
        """The median time per block over the recent samples; None while unknown (too few, or 0: automine)."""
        if len(self._gaps_ms) < PACE_MIN_SAMPLES:
            return None
        median = median_gap_ms(list(self._gaps_ms))
        return median or None

    def wait_ms(self, blocks: int) -> int | None:
        """`blocks` blocks at the block time; None while it is unknown."""
        block_time_ms = self.block_time_ms
        return None if block_time_ms is None else blocks * block_time_ms
