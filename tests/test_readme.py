"""The README is part of the product: its error table and its two commands must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from relayer.errors import RelayerError

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _documented() -> dict[str, str]:
    section = README[README.index("## Errors") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `([a-z_]+)`(?: / `[a-z_]+`)? \| ([0-9 /]+) \|", section, re.MULTILINE)
    return {code: status.strip() for code, status in rows}


def test_every_error_code_is_documented_with_its_status() -> None:
    documented = _documented()
    for cls in [RelayerError, *_all(RelayerError)]:
        assert cls.code in documented, f"README's error table lacks {cls.code}"
        assert documented[cls.code] == str(cls.http_status), f"{cls.code}: README says {documented[cls.code]}"


def test_no_documented_code_is_stale() -> None:
    codes = {cls.code for cls in [RelayerError, *_all(RelayerError)]}
    stale = set(_documented()) - codes - {"not_found"}
    assert not stale, f"README documents codes that no error has: {sorted(stale)}"


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"^(\./scripts/setup\.sh && [^#\n]+?)\s+#", README, re.MULTILINE)
    assert len(commands) == 2, "the README's first screen gives two commands"
    run_command, test_command = commands
    assert "relayer serve" in run_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def _all(root: type[RelayerError]) -> list[type[RelayerError]]:
    found: list[type[RelayerError]] = []
    for sub in root.__subclasses__():
        found += [sub, *_all(sub)]
    return found
