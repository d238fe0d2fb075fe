"""What the `relayer` commands share: the exit codes, and how a command's parser is set up.

`relayer.faces.cli.main` maps errors to these exit codes (`exit_code_for`); the command modules
(`serve`, `chain_commands`) add their parsers with `add_command`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, TypeAlias

from relayer.config import store_location
from relayer.stores.journal import SqlJournal
from relayer.stores.location import StoreLocation, open_journal

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
"""Exit codes: 1 for a request the chain or the relayer refused (and start-up failures such as a wrong vault
or contradictory settings), 2 for bad usage, 3 when the node is down (try again later)."""

Command = Callable[[argparse.Namespace], int]

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What `add_subparsers` returns (argparse's class is private and not subscriptable at run time)."""

NodeArguments = Literal["embedded", "required"]
"""`--rpc-url`, `--vault`, `--deployments`: "embedded" where no node means the embedded chain, "required"
where the command needs a node."""


def add_command(
    subparsers: Subparsers,
    name: str,
    handler: Command,
    *,
    help: str,
    description: str | None = None,
    node: NodeArguments | None = None,
    journal: bool = False,
) -> argparse.ArgumentParser:
    """Add the command `name` run by `handler`, with the node arguments and `--journal` if it takes them;
    the caller adds the command's own arguments to the parser returned."""
    parser = subparsers.add_parser(name, help=help, description=description)
    if node is not None:
        node_help = "JSON-RPC node URL (prefer RELAYER_RPC_URL if it holds an API key)"
        parser.add_argument("--rpc-url", help=node_help if node == "embedded" else node_help + "; required")
        parser.add_argument("--vault", help="the vault's address on that node")
        parser.add_argument("--deployments", help="a deployments/<chainId>.json file naming the vault")
    if journal:
        add_store_arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """`--journal` (the SQLite file) and `--database-url` (PostgreSQL, which wins when given)."""
    parser.add_argument("--journal", help=JOURNAL_HELP)
    parser.add_argument("--database-url", help=DATABASE_HELP)


def store_of(args: argparse.Namespace) -> StoreLocation:
    """Where the command's `--database-url` / `--journal` (or their variables) say the data is.

    Raises:
        ConfigurationError: a database URL that is not postgresql://.
    """
    return store_location(os.environ, getattr(args, "journal", None), getattr(args, "database_url", None))


@contextmanager
def opened_journal(args: argparse.Namespace, *, create: bool = False) -> Iterator[SqlJournal]:
    """The journal `store_of(args)` names, open for the block and closed after; a reader's by default (an
    absent SQLite file is an error, not a new empty journal). Opening migrates, or refuses a newer schema."""
    journal = open_journal(store_of(args), create=create)
    try:
        yield journal
    finally:
        journal.close()


JOURNAL_HELP = (
    "journal file (default: RELAYER_RELAY_JOURNAL_PATH, else .relayer/journal.sqlite3 in the current"
    " directory, the same file `relayer serve` uses there)"
)
"""Help of every `--journal` flag: where the journal is when the flag is not given."""

DATABASE_HELP = (
    "PostgreSQL database shared by several instances, postgresql://user:password@host:port/db (default:"
    " RELAYER_DATABASE_URL, which keeps the password out of the process list; without either, the journal"
    " file)"
)
