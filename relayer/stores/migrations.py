"""The one versioned schema of the relayer's database, for SQLite and PostgreSQL alike.

Every version is one `Migration`: its SQLite statements, and PostgreSQL's where that dialect spells them
otherwise (types, and a constraint changed in place where SQLite must rebuild the table). A database at
version v runs every later migration, all in one transaction (`migrate`), whichever adapter or process gets
there first: SQLite serializes them with `BEGIN IMMEDIATE`, PostgreSQL with a transaction-scoped advisory
lock. A database at a version newer than this relayer knows is refused (`check_version`): an older binary
must not write into a schema it does not understand.

The versions: 1 records and attempts; 2 API keys; 3 several chains per database; 4 the account a record
acts for; 5 several instances (signer and keeper leases, idempotency claims, and intents a signer's lease
holder sends for the instance that received them); 6 the sponsorship policy (spend counters per owner, API
key and the relayer, each record's charge) and API keys that expire, are limited to markets and to a daily
spend; 7 indexes for the two queries an instance runs against a growing table (records whose charge awaits
settlement, an account's records); 8 notices (what happened, written in the transaction that made it happen,
read by webhooks, streams and MCP in one order), webhook subscriptions and their deliveries.
"""

from __future__ import annotations

from dataclasses import dataclass

from relayer.errors import ConfigurationError


@dataclass(frozen=True)
class Migration:
    version: int
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        return self.postgres if dialect == "postgres" else self.sqlite


_V3_RECORD_COLUMNS = (
    "id, kind, status, idempotency_key, request_hash, sender, nonce, chain_id, to_address, data, value_wei,"
    " gas_limit, request_owner, request_nonce, deadline, noop_outcome, error, mined, created_at, updated_at"
)
"""The columns `records` had up to version 3: migration 3 copies exactly these, whatever came later."""

_RECORDS_V1_COLUMNS = """
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, idempotency_key TEXT,
    request_hash TEXT NOT NULL, sender TEXT NOT NULL, nonce INTEGER NOT NULL, chain_id INTEGER NOT NULL,
    to_address TEXT NOT NULL, data BLOB NOT NULL, value_wei TEXT NOT NULL, gas_limit INTEGER NOT NULL,
    request_owner TEXT, request_nonce TEXT, deadline INTEGER, noop_outcome TEXT, error TEXT, mined TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL"""
"""The columns of `records` from version 1 to 3, frozen with the migrations that create them (1, and 3's
rebuild, which only moves the idempotency key's uniqueness from the file to the chain)."""

_ATTEMPTS = """CREATE TABLE attempts (
    tx_hash TEXT PRIMARY KEY,
    record_id TEXT NOT NULL REFERENCES records (id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    raw_tx BLOB NOT NULL,
    max_fee_per_gas_wei TEXT NOT NULL,
    max_priority_fee_per_gas_wei TEXT NOT NULL,
    created_at REAL NOT NULL,
    broadcast_at REAL,
    UNIQUE (record_id, seq)
)"""

_INDEXES_V3 = (
    # One record per nonce of each relayer signer: the database itself refuses a duplicate nonce.
    "CREATE UNIQUE INDEX records_signer_nonce ON records (chain_id, sender, nonce) WHERE kind != 'raw'",
    # A signed request (owner, nonce) is relayed at most once at a time; a second copy would revert.
    """CREATE UNIQUE INDEX records_live_request ON records (chain_id, request_owner, request_nonce)
       WHERE request_owner IS NOT NULL AND status NOT IN ('failed', 'expired', 'replaced')""",
    "CREATE INDEX records_status ON records (chain_id, status, sender, nonce)",
)

_CHAINS = """CREATE TABLE chains (
    chain_id INTEGER PRIMARY KEY,
    genesis_hash TEXT NOT NULL,
    embedded_run TEXT,
    bound_at INTEGER NOT NULL
)"""
"""One row per chain id a relay started on: a real chain's genesis block hash, or the run id of an embedded
chain (`ChainBinding`). `bind_to_chain` compares a start with the row of its own id."""

_API_KEYS = """CREATE TABLE api_keys (
    id {id_column},
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    label TEXT NOT NULL,
    account TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
)"""
"""API keys (`SqlKeyStore`): only a key's SHA-256 is stored; `prefix` is its first characters, for `keys
list`."""

_V5 = (
    # A lease names who may act for a signer (`signer:<address>`), on user-signed raw transactions (`raw`) or
    # as the keeper (`keeper`) on one chain, until `expires_at` (the database's clock). `epoch` grows by one
    # at every takeover: the fencing token every nonce-allocating write checks in its own transaction.
    """CREATE TABLE leases (
        chain_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        holder TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        acquired_at REAL NOT NULL,
        PRIMARY KEY (chain_id, name)
    )""",
    # An Idempotency-Key being worked on: the first request with a key claims it here before any chain read,
    # so copies sent at once (to one instance or several) wait for its answer instead of racing it.
    """CREATE TABLE idempotency_claims (
        chain_id INTEGER NOT NULL,
        idempotency_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        holder TEXT NOT NULL,
        claimed_at REAL NOT NULL,
        PRIMARY KEY (chain_id, idempotency_key)
    )""",
    # A checked, simulated call waiting for the holder of its signer's lease to number, sign and send it (it
    # then becomes the record of the same id, in the transaction that deletes the intent), or refused by it.
    """CREATE TABLE intents (
        id TEXT PRIMARY KEY,
        chain_id INTEGER NOT NULL,
        signer TEXT NOT NULL,
        kind TEXT NOT NULL,
        to_address TEXT NOT NULL,
        data BLOB NOT NULL,
        gas_limit INTEGER NOT NULL,
        fees TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        idempotency_key TEXT,
        account TEXT,
        request_owner TEXT,
        request_nonce TEXT,
        deadline TEXT,
        state TEXT NOT NULL,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (chain_id, idempotency_key)
    )""",
    "CREATE INDEX intents_waiting ON intents (chain_id, signer, state, created_at)",
)


_V6 = (
    # What the relayer spent for whom: one row per budget scope (`owner:<address>`, `key:<id>`, `global`,
    # `keeper`) and fixed window (`window_s` long, starting at `window_start`, unix seconds). A record's
    # reservation is added in the transaction that inserts it; its settlement replaces the reservation by
    # what the chain charged. Wei as decimal text: exact in both databases.
    """CREATE TABLE spend (
        chain_id INTEGER NOT NULL,
        scope TEXT NOT NULL,
        window_s INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        spent_wei TEXT NOT NULL,
        PRIMARY KEY (chain_id, scope, window_s, window_start)
    )""",
    # A sponsored record's charge (JSON: the reserved wei and the windows it was added to), and what it was
    # settled at once final (NULL: not yet).
    "ALTER TABLE records ADD COLUMN charge TEXT",
    "ALTER TABLE records ADD COLUMN charged_wei TEXT",
    # API keys in the Gains API model: an expiry (unix seconds), the markets they may trade (comma-separated
    # symbols; NULL: all) and their own daily gas budget in wei (NULL: the policy's per-key budget).
    "ALTER TABLE api_keys ADD COLUMN expires_at INTEGER",
    "ALTER TABLE api_keys ADD COLUMN markets TEXT",
    "ALTER TABLE api_keys ADD COLUMN daily_spend_wei TEXT",
    # An intent carries its call's charge to the lease holder, which reserves it when it signs.
    "ALTER TABLE intents ADD COLUMN charge TEXT",
)


_V7 = (
    # `SqlJournal.unsettled_charges`, every loop round: only the few final records whose charge awaits
    # settlement are in this index, however many records the table holds.
    """CREATE INDEX records_unsettled ON records (chain_id, updated_at, id)
       WHERE charge IS NOT NULL AND charged_wei IS NULL""",
    # `SqlJournal.records(account=...)`: `GET /api/transactions` of one API key's account, newest first.
    "CREATE INDEX records_account ON records (chain_id, LOWER(account), created_at)",
)


_V8_NOTICES = """CREATE TABLE notices (
    id {id_column},
    txn INTEGER NOT NULL DEFAULT {txn_default},
    chain_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    account TEXT,
    record_id TEXT,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
)"""
"""`relayer.domain.notices`: `txn` is the writing transaction on PostgreSQL (readers read only notices whose
transaction is older than every running one, in (txn, id) order: ids are handed out before commit there);
0 on SQLite, whose one writer commits in id order."""

_V8 = (
    # The newest records of a chain (the console's recent transactions, `GET /api/transactions` with an
    # admin key, `relayer relay list`): without it every read sorts the whole table.
    "CREATE INDEX records_created ON records (chain_id, created_at, id)",
    "CREATE INDEX notices_order ON notices (chain_id, txn, id)",
    "CREATE INDEX notices_account ON notices (chain_id, account, txn, id)",
    # A webhook subscription: an API-key account's (`account`) or the operators' (NULL: every notice), with
    # its Standard Webhooks secret (the relayer signs with it, so it is kept, not hashed: the database is
    # 0600 / PostgreSQL's own access rules) and the cursor up to which notices were fanned out to it.
    """CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        chain_id INTEGER NOT NULL,
        account TEXT,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        types TEXT,
        cursor_txn INTEGER NOT NULL,
        cursor_id INTEGER NOT NULL,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX webhooks_account ON webhooks (chain_id, account)",
    # One notice to one subscription: `pending` until delivered (a 2xx) or `failed` after the last retry;
    # `claimed_until` keeps other instances off a delivery in flight (an instance that dies lets it go).
    """CREATE TABLE deliveries (
        id {id_column},
        webhook_id TEXT NOT NULL,
        notice_id INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_at REAL NOT NULL,
        claimed_until REAL,
        last_status INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (webhook_id, notice_id)
    )""",
    "CREATE INDEX deliveries_due ON deliveries (state, next_at)",
    # Pruning keeps a notice while a delivery of it is pending: found by notice.
    "CREATE INDEX deliveries_notice ON deliveries (notice_id)",
)


_V8_META = "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
"""Facts about the database itself: `database_id`, a random id made once, so that ids built from a
database's counters (a notice's webhook `webhook-id`, `evt_<database id>_<n>`) never repeat on another
database (a fresh one after a redeploy counts from 1 again)."""

_V8_DATABASE_ID = (
    "INSERT INTO meta (name, value) VALUES ('database_id', lower(hex(randomblob(8))))",
    "INSERT INTO meta (name, value) VALUES ('database_id',"
    " substr(md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text), 1, 16))",
)


def _postgres(statement: str) -> str:
    """A SQLite statement in PostgreSQL's types: BYTEA for BLOB, DOUBLE PRECISION for REAL, BIGINT for INTEGER
    (SQLite's integers are 64-bit; PostgreSQL's INTEGER is 32)."""
    for sqlite_type, postgres_type in (
        (" BLOB", " BYTEA"),
        (" REAL", " DOUBLE PRECISION"),
        (" INTEGER", " BIGINT"),
    ):
        statement = statement.replace(sqlite_type, postgres_type)
    return statement


def _same(*statements: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return statements, tuple(_postgres(statement) for statement in statements)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        *_same(
            f"CREATE TABLE records ({_RECORDS_V1_COLUMNS}, UNIQUE (idempotency_key))",
            "CREATE UNIQUE INDEX records_signer_nonce ON records (sender, nonce) WHERE kind != 'raw'",
            """CREATE UNIQUE INDEX records_live_request ON records (request_owner, request_nonce)
               WHERE request_owner IS NOT NULL AND status NOT IN ('failed', 'expired', 'replaced')""",
            "CREATE INDEX records_status ON records (status, sender, nonce)",
            _ATTEMPTS,
        ),
    ),
    Migration(
        2,
        (_API_KEYS.format(id_column="INTEGER PRIMARY KEY AUTOINCREMENT"),),
        (_postgres(_API_KEYS.format(id_column="INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")),),
    ),
    Migration(
        3,
        # Records of several chains share a database: a signer's nonce, a live signed request and an
        # idempotency key are unique per chain. SQLite cannot relax a column's UNIQUE in place, so the
        # table is rebuilt (foreign keys are off while migrations run) and its indexes made again;
        # PostgreSQL changes the constraint and the indexes in place.
        (
            f"CREATE TABLE records_v3 ({_RECORDS_V1_COLUMNS}, UNIQUE (chain_id, idempotency_key))",
            f"INSERT INTO records_v3 ({_V3_RECORD_COLUMNS}) SELECT {_V3_RECORD_COLUMNS} FROM records",  # noqa: S608
            "DROP TABLE records",
            "ALTER TABLE records_v3 RENAME TO records",
            *_INDEXES_V3,
            _CHAINS,
        ),
        (
            "ALTER TABLE records DROP CONSTRAINT records_idempotency_key_key",
            "ALTER TABLE records ADD CONSTRAINT records_chain_id_idempotency_key_key"
            " UNIQUE (chain_id, idempotency_key)",
            "DROP INDEX records_signer_nonce",
            "DROP INDEX records_live_request",
            "DROP INDEX records_status",
            *(_postgres(statement) for statement in (*_INDEXES_V3, _CHAINS)),
        ),
    ),
    Migration(
        4,
        # The account a record acts for (`RelayRecord.account`): a signed request's owner, an API-key
        # holder's account, a keeper execution's position owner, a raw transaction's sender. Records
        # journaled before keep NULL: nothing then said whom they were for.
        *_same("ALTER TABLE records ADD COLUMN account TEXT"),
    ),
    Migration(5, *_same(*_V5)),
    Migration(6, *_same(*_V6)),
    Migration(7, *_same(*_V7)),
    Migration(
        8,
        (
            *(
                statement.format(id_column="INTEGER PRIMARY KEY AUTOINCREMENT", txn_default="0")
                for statement in (_V8_NOTICES, *_V8)
            ),
            _V8_META,
            _V8_DATABASE_ID[0],
        ),
        (
            *(
                _postgres(
                    statement.format(
                        id_column="INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                        txn_default="(pg_current_xact_id()::text::bigint)",
                    )
                )
                for statement in (_V8_NOTICES, *_V8)
            ),
            _V8_META,
            _V8_DATABASE_ID[1],
        ),
    ),
)
"""Every version in order."""

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The version this relayer writes and reads."""


def check_version(found: int, where: str) -> None:
    """Refuse a database at a schema version newer than this relayer knows.

    Raises:
        ConfigurationError: naming both versions and what to do.
    """
    if found > SCHEMA_VERSION:
        raise ConfigurationError(
            f"the database {where} is at schema version {found}, newer than this relayer knows"
            f" ({SCHEMA_VERSION}): a newer relayer migrated it. Run that version (or newer) on it",
            database=where,
            schemaVersion=found,
            knownVersion=SCHEMA_VERSION,
        )
