"""`relayer policy show`: the gas sponsorship policy this environment configures (`RELAYER_SPONSOR_*`) and
what the relayer spent today against its daily cap, per chain the journal knows.

Reads the journal only (safe beside a running relayer). Wired into `relayer/faces/cli/main.py` with
`add_policy_commands(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from relayer.config import SponsorshipSettings
from relayer.domain import sponsorship
from relayer.faces.cli.common import EXIT_OK, add_store_arguments, opened_journal


def cmd_show(args: argparse.Namespace) -> int:
    policy = SponsorshipSettings.from_env(os.environ).to_policy()
    with opened_journal(args) as journal:
        now_s = int(time.time())
        chains = sorted({binding.chain_id for binding in journal.known_chains()})
        today = [sponsorship.spend_today(policy, journal.spend_usage, chain, now_s) for chain in chains]
    print(json.dumps({"policy": policy.to_dict(), "today": today}, indent=2))
    return EXIT_OK


def add_policy_commands(subparsers: Any) -> None:
    """Add `policy show` to the `relayer` command's subparsers."""
    policy = subparsers.add_parser("policy", help="the gas sponsorship policy and today's spend")
    commands = policy.add_subparsers(dest="policy_command", required=True)
    show = commands.add_parser(
        "show",
        help="print the policy (RELAYER_SPONSOR_*) and today's spend against the daily cap, per chain",
    )
    add_store_arguments(show)
    show.set_defaults(handler=cmd_show)
