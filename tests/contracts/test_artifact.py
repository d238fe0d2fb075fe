"""The committed abi/Vault.json is what contracts/Vault.sol compiles to today, with the pinned settings."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from relayer.chain.artifact import ARTIFACT_PATH, load_artifact
from tests.conftest import ROOT, require_tool

SOURCE = ROOT / "contracts" / "Vault.sol"


def test_committed_artifact_is_not_stale() -> None:
    """Recompiles with the pinned npm solc (skipped locally without Node, a failure in CI)."""
    require_tool("node", "Node.js")
    require_tool(ROOT / "node_modules" / "solc", "the npm package solc")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compile.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_artifact_records_its_source_and_compiler() -> None:
    raw = json.loads(ARTIFACT_PATH.read_text())
    assert raw["sourceSha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    assert raw["compiler"]["name"] == "solc"
    assert raw["compiler"]["version"].startswith("0.8.37+commit.")
    settings = raw["compiler"]["settings"]
    assert settings["optimizer"]["enabled"] is True
    assert settings["optimizer"]["runs"] > 0
    assert settings["evmVersion"] == "prague"
    assert raw["bytecode"].startswith("0x60")
    assert raw["deployedBytecode"].startswith("0x60")
    assert len(raw["deployedBytecode"]) < len(raw["bytecode"])
    names = {item.get("name") for item in raw["abi"]}
    assert {
        "openPosition",
        "closePosition",
        "closePositionWithSig",
        "multicall",
        "PositionDecreased",
        "SizeDeltaTooLarge",
        "InvalidSignature",
    } <= names
    assert load_artifact().artifact_hash == f"{raw['sourceSha256']}:{raw['compiler']['version']}"
