"""The compiled vault (abi/Vault.json), loaded once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ARTIFACT_PATH = Path(__file__).resolve().parents[2] / "abi" / "Vault.json"


@dataclass(frozen=True)
class VaultArtifact:
    """What deploying and talking to the vault needs from the compiler output."""

    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    source_sha256: str
    compiler_version: str
    immutable_ranges: tuple[tuple[int, int], ...]

    @property
    def artifact_hash(self) -> str:
        """Identifies the build a deployment came from (source hash and compiler); kept in deployments/."""
        return f"{self.source_sha256}:{self.compiler_version}"

    def matches_runtime_code(self, code: bytes) -> bool:
        """Whether deployed `code` is this build's runtime code.

        Immutable slots are excepted: the constructor writes them at deployment, so they differ per vault.
        """
        expected = bytearray.fromhex(self.deployed_bytecode[2:])
        if len(code) != len(expected):
            return False
        actual = bytearray(code)
        for start, length in self.immutable_ranges:
            actual[start : start + length] = expected[start : start + length]
        return actual == expected


@cache
def load_artifact(path: Path = ARTIFACT_PATH) -> VaultArtifact:
    """Read the committed artifact; `scripts/compile.py` writes it."""
    raw = json.loads(path.read_text())
    return VaultArtifact(
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        deployed_bytecode=raw["deployedBytecode"],
        source_sha256=raw["sourceSha256"],
        compiler_version=raw["compiler"]["version"],
        immutable_ranges=tuple((start, length) for start, length in raw["immutableRanges"]),
    )
