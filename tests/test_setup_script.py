"""scripts/setup.sh leaves the checkout as it found it, and a re-run installs nothing.

The real script runs twice in a temporary copy of its inputs, with stand-ins for the slow parts, so no package
is installed and the real `.venv` and `node_modules` are never written:

- `.venv` is a directory of the test's own whose stamp already matches the copied pyproject.toml; its `python`
  fails loudly, so a pip step that ran anyway would fail the run instead of installing anything;
- `npm` on PATH records its arguments; `ci` and `install` link the real anvil into the copy's node_modules
  (the script ends with `node_modules/.bin/anvil --version`), `ls` answers whether something was installed,
  and `install` also does what npm did to the old, incomplete lockfile: it adds the missing optional platform
  packages and rewrites package-lock.json. That rewrite, and a stamp taken over the lockfile before it, were
  the issue (the checkout turned dirty, and every re-run installed again).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

SETUP_INPUTS = ("scripts/setup.sh", "pyproject.toml", "package.json", "package-lock.json")
# Ignored by git and written by setup.sh: not part of the checkout.
INSTALL_DIRS = (".venv", "node_modules")
INSTALL_COMMANDS = frozenset({"ci", "install"})
FOUNDRY_TOOLS = ("@foundry-rs/anvil", "@foundry-rs/cast")

NPM_SHIM = """\
#!{python}
import json, pathlib, sys

checkout = pathlib.Path({checkout!r})
if pathlib.Path.cwd() != checkout:
    sys.exit(f"npm stand-in: called outside the test checkout ({{pathlib.Path.cwd()}})")
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
command = sys.argv[1] if len(sys.argv) > 1 else ""
anvil = checkout / "node_modules" / ".bin" / "anvil"
if command == "ls":
    sys.exit(0 if anvil.exists() else 1)
if command not in ("ci", "install"):
    sys.exit(f"npm stand-in: unexpected command {{sys.argv[1:]}}")
anvil.parent.mkdir(parents=True, exist_ok=True)
if not anvil.is_symlink():
    anvil.symlink_to({real_anvil!r})
if command == "install":
    # npm install records every platform's optional package the lockfile lacks, and writes the lockfile back.
    lockfile = checkout / "package-lock.json"
    lock = json.loads(lockfile.read_text())
    packages = lock["packages"]
    for declaring in list(packages.values()):
        for name, version in declaring.get("optionalDependencies", {{}}).items():
            entry = {{"version": version, "dev": True, "optional": True}}
            packages.setdefault(f"node_modules/{{name}}", entry)
    lock["packages"] = dict(sorted(packages.items()))
    lockfile.write_text(json.dumps(lock, indent=2, ensure_ascii=False) + "\\n")
"""

VENV_PYTHON_SHIM = """\
#!/bin/sh
echo "test .venv: setup.sh ran pip although the stamp matched pyproject.toml: $*" >&2
exit 1
"""


@dataclass(frozen=True)
class SetupRun:
    npm_calls: list[list[str]]
    checkout_changes: list[str]

    @property
    def installs(self) -> list[list[str]]:
        return [call for call in self.npm_calls if call[:1] and call[0] in INSTALL_COMMANDS]


@dataclass(frozen=True)
class SetupRuns:
    first: SetupRun
    second: SetupRun


@pytest.fixture(scope="module")
def source_root() -> Path:
    """Where setup.sh and its inputs come from: this checkout."""
    return ROOT


@pytest.fixture(scope="module")
def setup_runs(source_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SetupRuns:
    real_anvil = require_tool(ROOT / "node_modules" / ".bin" / "anvil", "anvil (npm @foundry-rs/anvil)")
    work = tmp_path_factory.mktemp("setup")
    checkout = work / "checkout"
    for name in SETUP_INPUTS:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_root / name, checkout / name)

    venv_python = checkout / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(VENV_PYTHON_SHIM)
    venv_python.chmod(0o755)
    py_stamp = hashlib.sha256((checkout / "pyproject.toml").read_bytes()).hexdigest()
    (checkout / ".venv" / ".setup-stamp").write_text(py_stamp + "\n")

    log = work / "npm-calls.jsonl"
    npm = work / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(
        NPM_SHIM.format(python=sys.executable, checkout=str(checkout), log=str(log), real_anvil=real_anvil)
    )
    npm.chmod(0o755)
    env = {**os.environ, "PATH": f"{npm.parent}{os.pathsep}{os.environ['PATH']}"}

    before = _files(checkout)

    def run() -> SetupRun:
        log.write_text("")
        result = subprocess.run(
            [str(checkout / "scripts" / "setup.sh")], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"setup.sh failed ({result.returncode}):\n{result.stderr}"
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return SetupRun(npm_calls=calls, checkout_changes=_changes(before, _files(checkout)))

    return SetupRuns(first=run(), second=run())


def test_first_run_installs_with_npm_ci_once(setup_runs: SetupRuns) -> None:
    installs = setup_runs.first.installs
    assert [call[0] for call in installs] == ["ci"], (
        f"setup.sh must install the npm packages once with `npm ci`, which never rewrites the lockfile; "
        f"npm was called with {setup_runs.first.npm_calls}"
    )


def test_setup_leaves_the_checkout_as_it_found_it(setup_runs: SetupRuns) -> None:
    assert setup_runs.first.checkout_changes == [], "the first run changed the checkout"
    assert setup_runs.second.checkout_changes == [], "the second run changed the checkout"


def test_a_second_run_installs_nothing(setup_runs: SetupRuns) -> None:
    assert setup_runs.second.installs == [], (
        f"a re-run with unchanged inputs must not install; npm was called with {setup_runs.second.npm_calls}"
    )


def test_the_lockfile_lists_every_platforms_anvil_and_cast_package(source_root: Path) -> None:
    """npm ci installs only what the lockfile lists; a lockfile made on one platform lacked the others."""
    pins = json.loads((source_root / "package.json").read_text())["devDependencies"]
    packages = json.loads((source_root / "package-lock.json").read_text())["packages"]
    assert packages[""]["devDependencies"] == pins, (
        "npm ci rejects a lockfile that disagrees with package.json"
    )
    missing: list[str] = []
    for tool in FOUNDRY_TOOLS:
        entry = packages[f"node_modules/{tool}"]
        assert entry["version"] == pins[tool], f"the lockfile has {tool}@{entry['version']}, not {pins[tool]}"
        platforms = entry.get("optionalDependencies", {})
        assert platforms, f"{tool} declares no platform binary packages: is this the lockfile's entry?"
        for name, version in platforms.items():
            listed = packages.get(f"node_modules/{name}", {})
            if listed.get("version") != version or "integrity" not in listed:
                missing.append(f"{name}@{version}")
    assert missing == [], f"package-lock.json lacks these platform packages (or their integrity): {missing}"


def _files(root: Path) -> dict[str, bytes]:
    """Every file of the checkout, by path, outside the ignored install directories."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).parts[0] not in INSTALL_DIRS
    }


def _changes(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    return [
        f"{'added' if name not in before else 'removed' if name not in after else 'modified'} {name}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]
