"""The `relayer` command line: a thin adapter over the library (argument parsing in, text out).

Errors are `RelayerError`s mapped once here (`exit_code_for`) to a message on stderr and an exit code; no
traceback for bad input, nor for a node that is down or a wrong vault at start-up (`serve` checks both before
uvicorn starts).

The commands live beside this module: `serve` (`serve`, `mcp`, `keeper`), `chain_commands` (`deploy`,
`demo`, `open`, `price set`, `operator`), `relay` (`relay status|list|signers`), `keys` (`keys
create|list|revoke`), `db` (`db migrate`), `policy` (`policy show`) and `webhooks` (`webhooks
add|list|remove|test|deliveries`); `common` holds the exit codes and
the parser set-up they share.

Signing keys come from the environment or an encrypted keystore, never from an argument
(`relayer.chain.accounts`): `RELAYER_DEPLOYER_*` for `deploy`, `RELAYER_TRADER_*` for `open` and `operator`,
`RELAYER_PRICE_KEEPER_*` for `price set`, `RELAYER_SIGNER_*` for the relayer. Every journal-using command
(`serve`, `mcp`, `keeper`, `keys`, `relay`) defaults to `.relayer/journal.sqlite3` in the current directory
(`--journal`, `RELAYER_RELAY_JOURNAL_PATH`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from relayer.errors import RelayerError
from relayer.faces.cli.chain_commands import add_account_commands, add_deploy_commands
from relayer.faces.cli.common import EXIT_ERROR, EXIT_UNAVAILABLE, EXIT_USAGE, Command
from relayer.faces.cli.db import add_db_commands
from relayer.faces.cli.keys import add_key_commands
from relayer.faces.cli.policy import add_policy_commands
from relayer.faces.cli.relay import add_relay_commands
from relayer.faces.cli.serve import add_serve_commands
from relayer.faces.cli.webhooks import add_webhook_commands


def exit_code_for(error: RelayerError) -> int:
    """The one mapping from the error tree to exit codes."""
    if error.retryable and error.http_status >= 500:
        return EXIT_UNAVAILABLE
    if error.http_status == 422:
        return EXIT_USAGE
    return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relayer", description="Transaction builder and relayer for the perp vault."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_deploy_commands(sub)
    add_serve_commands(sub)
    add_account_commands(sub)
    add_relay_commands(sub)
    add_key_commands(sub)
    add_db_commands(sub)
    add_policy_commands(sub)
    add_webhook_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except RelayerError as error:
        print(f"error [{error.code}]: {error.message}", file=sys.stderr)
        return exit_code_for(error)


if __name__ == "__main__":
    sys.exit(main())
