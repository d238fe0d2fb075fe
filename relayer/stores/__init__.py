"""Stores behind ports: what the services keep, each as a `Protocol` with its SQLite adapter beside it.

- `relayer.stores.journal`: the relay journal (`Journal`), with `journal_chains` (the chain its records belong
  to), `journal_rows` (rows to records and back) and `relay_lock` (one relaying process per journal).
- `relayer.stores.keys`: API keys (`KeyStore`, `SqliteKeyStore`).
- `relayer.stores.sqlite`: the one SQLite file's connection set-up and its versioned migrations, shared by
  every SQLite adapter (the key store here, the relay journal in `relayer.stores.journal`).

The services see only the ports; a second database (PostgreSQL) is a second adapter of the same ports.
"""
