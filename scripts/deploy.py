"""Deploy the vault and record it in deployments/<chainId>.json: a thin wrapper over `relayer deploy`.

The record goes to ./deployments in the current directory (not beside this script), unless --deployments-dir.

The key comes from RELAYER_DEPLOYER_KEY, or RELAYER_DEPLOYER_KEYSTORE + RELAYER_DEPLOYER_KEYSTORE_PASSWORD,
never from an argument. Without --rpc-url it deploys on a fresh embedded chain (with its well-known test key).
Re-running against a chain whose recorded deployment still holds the vault's code says so and deploys nothing.

Usage:
    python scripts/deploy.py                                # embedded chain
    python scripts/deploy.py --rpc-url http://127.0.0.1:8545 [--deployments-dir DIR] [--max-price-age S]
"""

from __future__ import annotations

import sys

from relayer.faces.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["deploy", *sys.argv[1:]]))
