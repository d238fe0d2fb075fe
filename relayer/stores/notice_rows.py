"""Notices as rows, once for every store that reads them (the journal's readers and the webhook outbox).

- `stored_notice`: a `notices` row as a `StoredNotice`, its id made unique by the database's id.
- `after`: the SQL that selects the notices after a cursor and, optionally, up to another, spelled so both
  databases seek the `(chain_id[, account], txn, id)` index to the cursor instead of scanning every retained
  notice. PostgreSQL bounds an index by a row comparison (`(txn, id) > (?, ?)`); SQLite does not, but there
  every notice's `txn` is 0, so after a cursor means `txn = 0 AND id > ?` (a cursor with another `txn` has
  nothing after it: the row comparison, on an empty range, answers that).
- `latest`: the newest notice no running transaction can still precede (`Dialect.settled_txn`).
- `database_id`: the random id schema 8 made once (`meta`), part of every notice id.
"""

from __future__ import annotations

import json
from typing import Any

from relayer.domain.notices import Cursor, NoticeType, StoredNotice
from relayer.stores.sql import Dialect, Row, Session


def stored_notice(row: Row, database_id: str | None, *, id_column: str = "id") -> StoredNotice:
    """The notice a `notices` row holds (`id_column`: where a join put the notice's id)."""
    return StoredNotice(
        cursor=Cursor(int(row["txn"]), int(row[id_column])),
        chain_id=int(row["chain_id"]),
        type=NoticeType(row["type"]),
        account=row["account"],
        record_id=row["record_id"],
        payload=json.loads(row["payload"]),
        created_at=row["created_at"],
        database_id=database_id,
    )


def _bound(dialect: Dialect, cursor: Cursor, operator: str) -> tuple[str, list[Any]]:
    if dialect.name == "sqlite" and cursor.txn == 0:
        return f"txn = 0 AND id {operator} ?", [cursor.id]  # a literal 0 picks the index's range
    return f"(txn, id) {operator} (?, ?)", [cursor.txn, cursor.id]


def after(dialect: Dialect, cursor: Cursor | None, upto: Cursor | None = None) -> tuple[str, list[Any]]:
    """`WHERE` text (and its arguments) for the settled notices after `cursor` (None: from the first) and,
    with `upto`, not after it (a cursor read as settled earlier, so no horizon is needed then)."""
    on_sqlite = dialect.name == "sqlite" and cursor is not None and cursor.txn == 0
    # SQLite's horizon (every notice's txn is 0, below it) would only make it pick the index range `txn < 1`
    # over the cursor's `txn = 0 AND id > ?`.
    parts = [] if upto is not None or on_sqlite else [f"txn < {dialect.settled_txn}"]
    args: list[Any] = []
    for bound, operator in ((cursor, ">"), (upto, "<=")):
        if bound is not None:
            sql, values = _bound(dialect, bound, operator)
            parts.append(sql)
            args.extend(values)
    return " AND ".join(parts) or "1 = 1", args


def latest(session: Session, dialect: Dialect, chain_id: int | None) -> Cursor:
    """The newest settled notice (of `chain_id`, when given); `Cursor(0, 0)` when there is none."""
    where = f"txn < {dialect.settled_txn}"
    args: list[Any] = []
    if chain_id is not None:
        where += " AND chain_id = ?"
        args.append(chain_id)
    row = session.row(
        f"SELECT txn, id FROM notices WHERE {where} ORDER BY txn DESC, id DESC LIMIT 1",  # noqa: S608
        args,
    )
    return Cursor(0, 0) if row is None else Cursor(int(row["txn"]), int(row["id"]))


def database_id(session: Session) -> str | None:
    """The database's random id (schema 8's `meta` row; None before it)."""
    row = session.row("SELECT value FROM meta WHERE name = 'database_id'")
    return None if row is None else str(row["value"])
