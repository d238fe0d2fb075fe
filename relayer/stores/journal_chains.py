"""The chains a journal's records belong to: `ChainBinding` and the rule that binds a relay start to one.

One journal file may hold the records of several chains (a node's server and an embedded demo started in the
same folder share `.relayer/journal.sqlite3`). The `chains` table keeps, per chain id, the chain a relay last
started on; `bind` decides, inside the journal's write transaction, whether a start may resume that id's
records, must be refused, or (the embedded chain) drops a dead run's records. `Journal.bind_to_chain` in
`relayer.stores.journal` is the entry point; the relay lock it needs is in `relayer.stores.relay_lock`.
"""

from __future__ import annotations

from dataclasses import dataclass

from relayer.errors import ConfigurationError
from relayer.stores.sql import Row, Session


@dataclass(frozen=True)
class ChainBinding:
    """The chain a relay start works on, as the journal's `chains` table keeps it per chain id.

    A real chain is told apart by its genesis block hash: the id alone does not tell a reset anvil (or a
    fork) from the chain the records were sent on. The embedded chain cannot be: its id is fixed and its
    genesis is made from the clock (two starts in one second have the same one), yet every run's chain is
    new and ends with its process. `embedded_run` tells runs apart: the random id of the in-process chain
    (`Chain.run_id`); None for a real chain.
    """

    chain_id: int
    genesis_hash: str
    embedded_run: str | None = None

    @property
    def embedded(self) -> bool:
        return self.embedded_run is not None

    def describe(self) -> str:
        if self.embedded_run is not None:
            return f"the embedded chain {self.chain_id} of run {self.embedded_run}"
        return f"chain {self.chain_id} (genesis block {self.genesis_hash})"


def known_chains(session: Session) -> list[ChainBinding]:
    """Every chain a relay started on with the journal, by chain id (one row per id)."""
    rows = session.rows("SELECT * FROM chains ORDER BY chain_id")
    return [_binding(row) for row in rows]


def bind(session: Session, journal_path: str, chain: ChainBinding, *, now: int) -> int:
    """Bind the journal on `conn` to `chain`, inside the caller's write transaction; returns how many records
    were dropped.

    Decided by the records themselves (their `chain_id`) and the `chains` row of that same id, never by
    which chain the journal started on last: one file commonly serves a node's server and an embedded demo
    started in the same folder, and records of any other chain id are never read, resumed or touched.
    With `n` the journal's records of `chain.chain_id`:

    - a real chain: its row names the same genesis, or there is no row (a journal from before chain rows:
      its records are adopted, as they always were): bound, nothing dropped. Another genesis (a reset
      anvil, a fork) or an embedded run's row, with `n > 0`: refused, nothing changes; with `n == 0` the
      row is rewritten.
    - the embedded chain: every run's chain is new and ends with its process, so its id's records belong
      to a live chain only when this very run wrote them (the row names this `embedded_run`: a relay
      restarted inside the process resumes them). Any other run's records can never be mined or resumed,
      and their (sender, nonce) pairs would collide with the new chain's, which start at 0 again: they are
      deleted with their attempts (API keys stay). Never decided by genesis, which two runs started in one
      second share. A real chain's row with `n > 0` (a node on the embedded chain's id): refused.

    Raises:
        ConfigurationError: the records of this chain id belong to another chain (see above).
    """
    row = session.row("SELECT * FROM chains WHERE chain_id = ?", (chain.chain_id,))
    known = None if row is None else _binding(row)
    counted = session.row("SELECT COUNT(*) AS n FROM records WHERE chain_id = ?", (chain.chain_id,))
    count = 0 if counted is None else int(counted["n"])
    dropped = 0
    foreign = known is not None and (
        known.embedded != chain.embedded or (not chain.embedded and known.genesis_hash != chain.genesis_hash)
    )
    if count and foreign:
        assert known is not None
        raise ConfigurationError(
            f"the journal {journal_path} holds {count} relay records of {known.describe()}, and this"
            f" start is on {chain.describe()}: records are resumed only on their own chain. Give"
            " this chain its own journal (e.g. --journal .relayer/other.sqlite3, or"
            " RELAYER_RELAY_JOURNAL_PATH), or move this one away if its chain is gone (its API keys"
            " go with it)",
            journal=journal_path,
            journalChainId=known.chain_id,
            chainId=chain.chain_id,
        )
    if count and chain.embedded and known != chain:
        session.execute(
            "DELETE FROM attempts WHERE record_id IN (SELECT id FROM records WHERE chain_id = ?)",
            (chain.chain_id,),
        )
        session.execute("DELETE FROM records WHERE chain_id = ?", (chain.chain_id,))
        dropped = count
    session.execute(
        "INSERT INTO chains (chain_id, genesis_hash, embedded_run, bound_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (chain_id) DO UPDATE SET genesis_hash = excluded.genesis_hash,"
        " embedded_run = excluded.embedded_run, bound_at = excluded.bound_at",
        (chain.chain_id, chain.genesis_hash, chain.embedded_run, now),
    )
    return dropped


def _binding(row: Row) -> ChainBinding:
    return ChainBinding(int(row["chain_id"]), row["genesis_hash"], row["embedded_run"])
