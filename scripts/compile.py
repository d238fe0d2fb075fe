"""Compile contracts/Vault.sol with the pinned npm `solc` and write abi/Vault.json.

The artifact is committed so the Python side runs without Node. `--check` recompiles and exits 1 when the
committed artifact differs from what the source compiles to today (the test suite runs it).

Usage:
    python scripts/compile.py            # write abi/Vault.json
    python scripts/compile.py --check    # fail if abi/Vault.json is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "contracts" / "Vault.sol"
ARTIFACT = ROOT / "abi" / "Vault.json"
CONTRACT_NAME = "Vault"

# Prague is the newest fork both py-evm (eth-tester) and anvil execute; pinning it keeps bytecode identical
# whatever solc's default becomes.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 1_000},
    "evmVersion": "prague",
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.deployedBytecode.immutableReferences",
            ]
        }
    },
}

_NODE_SOLC = """
const solc = require('solc');
let input = '';
process.stdin.on('data', (d) => (input += d)).on('end', () => {
  process.stdout.write(JSON.stringify({version: solc.version(), output: JSON.parse(solc.compile(input))}));
});
"""


def compile_artifact() -> dict[str, Any]:
    """Compile the vault and return the artifact dict (what abi/Vault.json holds)."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not on PATH: install Node 20 and run `npm ci` first")
    if not (ROOT / "node_modules" / "solc").is_dir():
        raise SystemExit("the npm package solc is missing: run `npm ci` in the repository root")
    source = SOURCE.read_text()
    request = {
        "language": "Solidity",
        "sources": {"contracts/Vault.sol": {"content": source}},
        "settings": SETTINGS,
    }
    done = subprocess.run(
        [node, "-e", _NODE_SOLC],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    result = json.loads(done.stdout)
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e["severity"] == "error"]
    if errors:
        raise SystemExit("\n".join(e["formattedMessage"] for e in errors))
    for warning in output.get("errors", []):
        print(warning["formattedMessage"], file=sys.stderr)
    contract = output["contracts"]["contracts/Vault.sol"][CONTRACT_NAME]
    return {
        "contractName": CONTRACT_NAME,
        "sourcePath": "contracts/Vault.sol",
        "sourceSha256": hashlib.sha256(source.encode()).hexdigest(),
        "compiler": {"name": "solc", "version": result["version"], "settings": SETTINGS},
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        # Byte ranges of the runtime code that the constructor fills (admin, chain id, domain separator):
        # a deployed vault's code equals `deployedBytecode` everywhere else.
        "immutableRanges": sorted(
            [ref["start"], ref["length"]]
            for refs in contract["evm"]["deployedBytecode"]["immutableReferences"].values()
            for ref in refs
        ),
    }


def render(artifact: dict[str, Any]) -> str:
    """Serialise deterministically so a rebuild of the same source is byte-identical."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed artifact is stale")
    args = parser.parse_args(argv)
    fresh = render(compile_artifact())
    if args.check:
        committed = ARTIFACT.read_text() if ARTIFACT.exists() else ""
        if committed != fresh:
            print(f"{ARTIFACT.relative_to(ROOT)} is stale: run `python scripts/compile.py`", file=sys.stderr)
            return 1
        print(f"{ARTIFACT.relative_to(ROOT)} is up to date")
        return 0
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(fresh)
    print(f"wrote {ARTIFACT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
