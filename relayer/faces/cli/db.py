"""`relayer db migrate`: bring the database (PostgreSQL, or the SQLite journal file) to this relayer's schema.

Every start migrates too, so this is for operators who migrate before rolling out several instances (the
instances then start on a schema they know), and to see which version a database is at. A database at a newer
version than this relayer knows is refused, here and at every start (`relayer.stores.migrations`).
"""

from __future__ import annotations

import argparse
from typing import Any

from relayer.faces.cli.common import EXIT_OK, add_store_arguments, opened_journal, store_of


def cmd_migrate(args: argparse.Namespace) -> int:
    with opened_journal(args, create=True) as journal:  # opening migrates, in one transaction
        print(f"{store_of(args).describe()}: schema version {journal.schema_version} (up to date)")
    return EXIT_OK


def add_db_commands(subparsers: Any) -> None:
    """Add `db migrate` to the `relayer` command's subparsers."""
    db = subparsers.add_parser("db", help="the relayer's database: migrate its schema")
    commands = db.add_subparsers(dest="db_command", required=True)
    migrate = commands.add_parser(
        "migrate",
        help="bring the database to this relayer's schema version (every start does it too)",
        description="Runs every migration the database lacks, in one transaction; refuses a database at a"
        " newer version than this relayer knows.",
    )
    add_store_arguments(migrate)
    migrate.set_defaults(handler=cmd_migrate)
