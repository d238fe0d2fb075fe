"""One journal file, several chains: each relay start works on its own chain's records and touches no other.

Every command defaults to `.relayer/journal.sqlite3`, so a node's server and an embedded demo started in the
same folder share one file. `bind_to_chain` decides by the records' own chain id: an embedded start drops
only the records an earlier run's embedded chain left (by run, never by genesis), a real chain's records are
resumed on that chain and refused on a reset one, and a bound journal reads and numbers nonces from its own
chain's records only. The file itself is private, and the API keys it also holds (`relayer.stores.keys`)
survive every binding.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal

from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain, chain_port, embedded_chain
from relayer.chain.deploy import deploy_vault
from relayer.config import RelaySettings, Settings
from relayer.domain import apikeys
from relayer.domain.records import RelayRecord
from relayer.errors import ConfigurationError
from relayer.runtime import chain_binding, open_bound_journal
from relayer.stores.journal import SqliteJournal
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.journal_port import JournalConflict
from relayer.stores.keys import SqliteKeyStore
from relayer.stores.sqlite import MIGRATIONS, SCHEMA_VERSION
from tests.relay.records import SENDER, queued_record

EMBEDDED_CHAIN_ID = 131277322940537  # eth-tester's, the same on every run
REAL = ChainBinding(31337, "0x" + "aa" * 32)
RESET_REAL = ChainBinding(31337, "0x" + "bb" * 32)  # same id, new genesis: a reset node
OTHER_REAL = ChainBinding(11155111, "0x" + "11" * 32)
EMBEDDED = ChainBinding(EMBEDDED_CHAIN_ID, "0x" + "cc" * 32, embedded_run="run-1")
SAME_SECOND_EMBEDDED = ChainBinding(EMBEDDED_CHAIN_ID, "0x" + "cc" * 32, embedded_run="run-2")
"""The next run's embedded chain, started in the same second: eth-tester's genesis is made from the clock."""
REAL_ON_EMBEDDED_ID = ChainBinding(EMBEDDED_CHAIN_ID, "0x" + "dd" * 32)  # a node configured with that id


def add_key(path: Path, label: str = "bot", key_hash: str = "k" * 64) -> None:
    with closing(SqliteKeyStore(path)) as keys:
        keys.insert_api_key(
            key_hash=key_hash,
            prefix="vrk_k",
            label=label,
            account=SENDER,
            scopes=frozenset({apikeys.Scope.READ}),
            now=1,
        )


def journal_with_a_record(path: Path, chain: ChainBinding, record_id: str = "a1") -> None:
    """A journal file on which a relay started on `chain` and left one unfinished record at nonce 0, plus
    one API key."""
    journal = SqliteJournal(path, relaying=True)
    try:
        journal.bind_to_chain(chain, now=1)
        with journal.write() as writer:
            writer.insert(queued_record(record_id, 0, chain_id=chain.chain_id))
        add_key(path, key_hash=(record_id * 64)[:64])
    finally:
        journal.close()


def start(path: Path, chain: ChainBinding) -> tuple[SqliteJournal, int]:
    """A relay start on `chain`: the journal opened for relaying and bound; (journal, records dropped)."""
    journal = SqliteJournal(path, relaying=True)
    try:
        return journal, journal.bind_to_chain(chain, now=2)
    except BaseException:
        journal.close()
        raise


def ids(records: list[RelayRecord]) -> list[str]:
    return sorted(record.id for record in records)


def v2_journal(path: Path, *records: RelayRecord) -> None:
    """A journal as version 2 (before chain rows) wrote it, holding `records`."""
    conn = sqlite3.connect(path, isolation_level=None)
    for version, statements in MIGRATIONS:
        if version <= 2:
            for statement in statements:
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    for record in records:
        conn.execute(
            "INSERT INTO records (id, kind, status, idempotency_key, request_hash, sender, nonce, chain_id,"
            " to_address, data, value_wei, gas_limit, created_at, updated_at)"
            " VALUES (?, 'close', 'queued', ?, 'h', ?, ?, ?, ?, x'01', '0', 100000, 1.0, 1.0)",
            (record.id, record.idempotency_key, record.sender, record.nonce, record.chain_id, record.to),
        )
        conn.execute(
            "INSERT INTO attempts (tx_hash, record_id, seq, kind, raw_tx, max_fee_per_gas_wei,"
            " max_priority_fee_per_gas_wei, created_at) VALUES (?, ?, 0, 'original', x'00', '10', '1', 1.0)",
            (f"0x{record.id}", record.id),
        )
    conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


# --- real chains --------------------------------------------------------------------------------------------


def test_the_same_real_chain_again_resumes_its_records(path: Path) -> None:
    journal_with_a_record(path, REAL)
    journal, dropped = start(path, REAL)

    assert dropped == 0
    assert journal.known_chains() == [REAL]
    assert ids(journal.pending()) == ["a1"]
    journal.close()


def test_records_of_a_reset_node_or_of_another_run_kind_are_refused_and_kept(path: Path) -> None:
    journal_with_a_record(path, REAL)
    journal_with_a_record(path.with_name("embedded.sqlite3"), EMBEDDED)

    for file, other in ((path, RESET_REAL), (path.with_name("embedded.sqlite3"), REAL_ON_EMBEDDED_ID)):
        with pytest.raises(ConfigurationError) as refused:
            start(file, other)
        assert f"holds 1 relay records of {'chain 31337' if file == path else 'the embedded chain'}" in (
            refused.value.message
        )
        assert "--journal" in refused.value.message

    journal = SqliteJournal(path)
    assert journal.known_chains() == [REAL]
    assert ids(journal.all()) == ["a1"]
    journal.close()


def test_a_reset_node_rebinds_a_journal_without_records_of_its_id(path: Path) -> None:
    journal, _ = start(path, REAL)
    journal.close()

    journal, dropped = start(path, RESET_REAL)

    assert dropped == 0
    assert journal.known_chains() == [RESET_REAL]
    journal.close()


def test_an_embedded_start_never_drops_a_real_chain_that_uses_its_id(path: Path) -> None:
    journal_with_a_record(path, REAL_ON_EMBEDDED_ID)

    with pytest.raises(ConfigurationError, match="holds 1 relay records of chain 131277322940537"):
        start(path, EMBEDDED)

    journal = SqliteJournal(path)
    assert ids(journal.all()) == ["a1"]
    journal.close()


# --- the embedded chain -------------------------------------------------------------------------------------


def test_an_earlier_runs_embedded_records_are_dropped_and_everything_else_kept(path: Path) -> None:
    journal_with_a_record(path, REAL, "real")
    journal_with_a_record(path, EMBEDDED, "old-embedded")

    journal, dropped = start(path, dataclasses.replace(SAME_SECOND_EMBEDDED, genesis_hash="0x" + "ee" * 32))

    assert dropped == 1
    assert journal.all() == []  # this run's records: none yet
    assert journal.by_hash("0xold-embedded") is None
    assert journal.get("old-embedded") is None  # its attempts went with it (foreign keys are on)
    with closing(SqliteKeyStore(path)) as keys:
        assert [key.label for key in keys.api_keys()] == ["bot", "bot"]
    with journal.write() as writer:  # the new chain's nonce 0 no longer collides with the old record's
        writer.insert(queued_record("new", 0, chain_id=EMBEDDED_CHAIN_ID))
    journal.close()
    reader = SqliteJournal(path)
    assert ids(reader.all()) == ["new", "real"]  # an unbound reader sees every chain's records
    reader.close()


def test_two_embedded_runs_started_in_the_same_second_do_not_share_records(path: Path) -> None:
    """eth-tester's genesis comes from the clock: the second run's genesis equals the first's, and it must
    still not resume the first run's records (that chain is gone)."""
    journal_with_a_record(path, EMBEDDED)
    assert SAME_SECOND_EMBEDDED.genesis_hash == EMBEDDED.genesis_hash

    journal, dropped = start(path, SAME_SECOND_EMBEDDED)

    assert dropped == 1
    assert journal.pending() == []
    assert journal.known_chains() == [SAME_SECOND_EMBEDDED]
    journal.close()


def test_the_same_embedded_run_restarting_its_relay_resumes(path: Path) -> None:
    """Inside one process the embedded chain lives on: a relay restarted on it (a new app on the same chain)
    resumes its records."""
    journal_with_a_record(path, EMBEDDED)

    journal, dropped = start(path, EMBEDDED)

    assert dropped == 0
    assert ids(journal.pending()) == ["a1"]
    journal.close()


def test_an_embedded_start_beside_a_node_server_leaves_the_servers_records_alone(path: Path) -> None:
    """The reviewer's scenario: `serve --rpc-url` binds an empty journal, an embedded start in the same folder
    binds it too, the node server journals real trades, and the next embedded start must drop none of them
    (the old single binding row said "embedded" and deleted them, pending ones included)."""
    node_server, _ = start(path, REAL)
    first_embedded, _ = start(path, EMBEDDED)
    first_embedded.close()
    with node_server.write() as writer:  # the node server keeps trading after the embedded start
        writer.insert(queued_record("real-1", 0))
        writer.insert(queued_record("real-2", 1, idempotency_key="account:close-1"))

    next_embedded, dropped = start(path, SAME_SECOND_EMBEDDED)

    assert dropped == 0
    assert next_embedded.pending() == []  # it neither sees nor resumes the node's records
    next_embedded.close()
    assert ids(node_server.pending()) == ["real-1", "real-2"]
    assert node_server.by_idempotency_key("account:close-1") is not None  # a retry finds its trade
    with node_server.write() as writer:
        assert writer.max_nonce(SENDER) == 1  # the next real nonce is 2, as before
    node_server.close()


def test_a_version_2_journal_is_adopted_by_its_own_chain_only(path: Path) -> None:
    """A journal from before chain rows holds a real chain's records: an embedded start and a start on
    another chain leave them alone (the old code adopted them as "embedded", then deleted them), and the
    real chain's next start resumes them."""
    v2_journal(path, queued_record("a1", 0), queued_record("a2", 1, idempotency_key="k"))

    embedded, dropped = start(path, EMBEDDED)
    assert (dropped, embedded.pending()) == (0, [])
    embedded.close()
    other, dropped = start(path, OTHER_REAL)
    assert (dropped, other.pending()) == (0, [])
    other.close()

    journal, dropped = start(path, REAL)
    assert journal.schema_version == SCHEMA_VERSION == 8
    assert dropped == 0
    assert ids(journal.pending()) == ["a1", "a2"]
    assert journal.by_hash("0xa2") is not None  # the attempts survived the table's rebuild
    journal.close()


def embedded_client(portal: BlockingPortal, chain: Chain) -> ChainClient:
    """A started client of a vault deployed on the embedded `chain`, made on `portal`'s loop."""
    vault = deploy_vault(chain.w3, chain.test_accounts()[0]).address

    async def make() -> ChainClient:
        client = ChainClient(chain_port(chain), vault)
        await client.start()
        return client

    return portal.call(make)


def test_each_embedded_chain_is_its_own_run_whatever_its_genesis(path: Path, portal: BlockingPortal) -> None:
    """Through the runtime: two embedded chains (two `relayer serve` runs) bind as two runs even when their
    genesis blocks are equal, and the second drops what the first left; the first, still alive in its
    process, resumes its own."""
    settings = Settings(vault_address="0x" + "11" * 20, relay=RelaySettings(journal_path=path))
    first, second = embedded_chain(), embedded_chain()
    first_client, second_client = embedded_client(portal, first), embedded_client(portal, second)
    try:
        first_binding = portal.call(chain_binding, first_client, first)
        assert first_binding.embedded
        assert portal.call(chain_binding, first_client, first) == first_binding
        assert portal.call(chain_binding, second_client, second).embedded_run != first_binding.embedded_run

        journal = portal.call(open_bound_journal, settings, first_client, first)
        with journal.write() as writer:
            writer.insert(queued_record("first-run", 0, chain_id=first_binding.chain_id))
        journal.close()
        # the same chain, its relay restarted: resumed
        journal = portal.call(open_bound_journal, settings, first_client, first)
        assert ids(journal.pending()) == ["first-run"]
        journal.close()

        journal = portal.call(open_bound_journal, settings, second_client, second)
        assert journal.all() == []
        journal.close()
    finally:
        portal.call(first_client.aclose)
        portal.call(second_client.aclose)


# --- a bound journal works on its own chain's records -------------------------------------------------------


def test_a_bound_journal_reads_and_numbers_only_its_chains_records(path: Path) -> None:
    journal_with_a_record(path, OTHER_REAL, "other")
    journal, _ = start(path, REAL)

    with journal.write() as writer:
        assert writer.max_nonce(SENDER) is None  # the same key's nonces on the other chain are not ours
        # the same signer, nonce and idempotency key on another chain are another record, not a conflict
        writer.insert(queued_record("mine", 0, idempotency_key="public:k"))
    with journal.write() as writer, pytest.raises(JournalConflict) as same_nonce:
        writer.insert(queued_record("again", 0))
    assert same_nonce.value.constraint == "signer_nonce"

    assert ids(journal.pending()) == ids(journal.all()) == ids(journal.records()) == ["mine"]
    assert journal.by_hash("0xother") is None
    assert journal.nonce_summary() == {SENDER: (0, 1)}
    other = SqliteJournal(path, relaying=True)
    other.bind_to_chain(OTHER_REAL, now=3)
    with other.write() as writer:
        writer.insert(queued_record("other-2", 1, chain_id=OTHER_REAL.chain_id, idempotency_key="public:k"))
        with pytest.raises(ValueError, match="a record of chain 31337 in a journal bound to 11155111"):
            writer.insert(queued_record("stray", 5))
    assert other.by_idempotency_key("public:k") == other.get("other-2")
    assert journal.by_idempotency_key("public:k") == journal.get("mine")
    other.close()
    journal.close()


def test_binding_needs_the_relay_lock(path: Path) -> None:
    journal = SqliteJournal(path)
    with pytest.raises(ValueError, match="relaying=True"):
        journal.bind_to_chain(REAL, now=1)
    assert journal.known_chains() == []
    journal.close()


# --- the file -----------------------------------------------------------------------------------------------


def test_a_new_journal_and_its_folder_are_private(tmp_path: Path) -> None:
    path = tmp_path / ".relayer" / "journal.sqlite3"

    journal = SqliteJournal(path, relaying=True)
    with journal.write() as writer:
        writer.insert(queued_record("a1", 0))

    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    lock = path.with_name(path.name + ".lock")
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"), lock):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    journal.close()


def test_an_existing_file_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    path.touch()
    path.chmod(0o640)

    SqliteJournal(path).close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_journal_that_cannot_be_opened_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot open the relay journal"):
        SqliteJournal(tmp_path)  # a directory
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("not a database, clearly" * 100)
    with pytest.raises(ConfigurationError, match="cannot open the relay journal"):
        SqliteJournal(not_sqlite)
