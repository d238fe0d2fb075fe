"""`relayer relay ...`: what an operator needs to see of the relayer, as a thin adapter over the journal and
`RelayService`.

`status` and `list` read the journal file only (WAL: safe beside a running relayer); `signers` also asks the
node for balances and nonces. Wired into `relayer/faces/cli/main.py` with `add_relay_commands(subparsers)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from relayer.chain.client import ChainClient
from relayer.chain.jsonrpc import JsonRpcTransport
from relayer.config import RelaySettings
from relayer.constants import ETH_DECIMALS
from relayer.domain.records import RecordPage
from relayer.domain.status import TxStatus
from relayer.domain.units import format_fixed
from relayer.errors import ConfigurationError, TransactionNotFoundError
from relayer.faces.cli.common import EXIT_OK, add_store_arguments, opened_journal, store_of
from relayer.services.relay.service import RelayService
from relayer.services.relay.signers import Signer, load_signers
from relayer.stores.location import StoreLocation, open_journal


def cmd_status(args: argparse.Namespace) -> int:
    with opened_journal(args) as journal:
        record = journal.get(args.id)
    if record is None:
        raise TransactionNotFoundError("no relayed transaction has this id", id=args.id)
    print(json.dumps(record.to_dict(), indent=2))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    page = RecordPage.parse(args.status, args.limit)
    with opened_journal(args) as journal:
        records = journal.records(page.status, limit=page.limit)
    for record in records:
        tx_hash = record.mined.tx_hash if record.mined else record.latest.tx_hash
        print(
            f"{record.id}  {record.status.value:<9}  {record.kind.value:<9}  {record.sender}  "
            f"nonce {record.nonce:<6}  hashes {len(record.attempts)}  {tx_hash}"
        )
    if not records:
        print("no relayed transactions" + (f" with status {page.status.value}" if page.status else ""))
    return EXIT_OK


def cmd_signers(args: argparse.Namespace) -> int:
    location = store_of(args)
    settings = RelaySettings.from_env(os.environ).model_copy(update={"journal_path": location.journal_path})
    signers = load_signers()
    if not signers:
        raise ConfigurationError(
            "no relayer signer: set RELAYER_SIGNER_KEY or RELAYER_SIGNER_KEYSTORE (+ _PASSWORD)"
        )
    rows = asyncio.run(_signer_rows(args.rpc_url, args.vault, signers, settings, location))
    for row in rows:
        flag = "  LOW BALANCE" if row["lowBalance"] else ""
        print(
            f"{row['address']}  {format_fixed(int(row['balanceWei']), ETH_DECIMALS)} ETH{flag}\n"
            f"    chain nonce latest {row['chainLatestNonce']}, pending {row['chainPendingNonce']}; "
            f"journal next {row['journalNextNonce']}; in flight {row['inFlight']}"
        )
    return EXIT_OK


async def _signer_rows(
    rpc_url: str, vault: str, signers: list[Signer], settings: RelaySettings, location: StoreLocation
) -> list[dict[str, Any]]:
    chain = ChainClient(JsonRpcTransport(rpc_url), vault)
    service = RelayService(chain=chain, signers=signers, settings=settings, journal=open_journal(location))
    try:
        await chain.start()
        return [s.to_dict() for s in await service.signers_status()]
    finally:
        service.journal.close()
        await chain.aclose()


def add_relay_commands(subparsers: Any) -> None:
    """Add `relay status|list|signers` to the `relayer` command's subparsers."""
    relay = subparsers.add_parser("relay", help="inspect the relayer: transactions, signers and nonces")
    commands = relay.add_subparsers(dest="relay_command", required=True)

    status = commands.add_parser("status", help="one relayed transaction: status, every hash, receipt")
    status.add_argument("id")
    add_store_arguments(status)
    status.set_defaults(handler=cmd_status)

    listing = commands.add_parser("list", help="relayed transactions, newest first")
    listing.add_argument("--status", help=f"one of {', '.join(s.value for s in TxStatus)}")
    listing.add_argument("--limit", type=int, default=50)
    add_store_arguments(listing)
    listing.set_defaults(handler=cmd_list)

    signers = commands.add_parser(
        "signers", help="signer balances (low-balance alert) and chain vs journal nonces"
    )
    signers.add_argument("--rpc-url", required=True, help="JSON-RPC node URL")
    signers.add_argument("--vault", required=True, help="the vault's address")
    add_store_arguments(signers)
    signers.set_defaults(handler=cmd_signers)
