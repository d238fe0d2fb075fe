"""The README is part of the product: its error table and its two commands must stay true."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from relayer.errors import RelayerError
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _documented() -> dict[str, str]:
    section = README[README.index("## Errors") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `([a-z_]+)`(?: / `[a-z_]+`)? \| ([0-9 /]+) \|", section, re.MULTILINE)
    return {code: status.strip() for code, status in rows}


def test_every_error_code_is_documented_with_its_status() -> None:
    documented = _documented()
    for cls in _all(RelayerError):
        assert cls.code in documented, f"README's error table lacks {cls.code}"
        assert documented[cls.code] == str(cls.http_status), f"{cls.code}: README says {documented[cls.code]}"


def test_no_documented_code_is_stale() -> None:
    codes = {cls.code for cls in _all(RelayerError)}
    stale = set(_documented()) - codes
    assert not stale, f"README documents codes that no error has: {sorted(stale)}"


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"^(\./scripts/setup\.sh && [^#\n]+?)\s+#", README, re.MULTILINE)
    assert len(commands) == 2, "the README's first screen gives two commands"
    run_command, test_command = commands
    assert "relayer serve" in run_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def _all(root: type[RelayerError]) -> list[type[RelayerError]]:
    """`root` and every class under it."""
    found = [root]
    for sub in root.__subclasses__():
        found += _all(sub)
    return found


# --- the README's commands work when pasted -----------------------------------------------------------------

README_PORT = "8000"
ANVIL_PORT = "8545"


def readme_blocks(tag: str) -> list[str]:
    """The bash blocks marked `<!-- readme-test: TAG -->`, in the README's order."""
    return re.findall(rf"<!-- readme-test: {tag} -->\n```bash\n(.*?)```", README, re.DOTALL)


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _workdir(tmp_path: Path) -> Path:
    """A folder that looks like the checkout (`.venv`, `node_modules`) but keeps what the commands write
    (`deployments/`, `.relayer/`) away from the real one and from other test workers."""
    for name in (".venv", "node_modules"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RELAYER_")}, **extra}


def _run_pasted(script: str, cwd: Path, env: dict[str, str], timeout_s: float) -> str:
    """Run `script` as a user pasting it would (bash, stopping at the first failing command), then end
    everything it left running in the background. Output goes to a file: a background server keeps a pipe
    open after bash itself is done."""
    log = cwd / "pasted.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the pasted commands did not finish in {timeout_s} s:\n{log.read_text()}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    output = log.read_text()
    assert process.returncode == 0, output
    return output


def _json_documents(output: str) -> list[dict[str, Any]]:
    """Every JSON object `curl -s` printed (they follow each other without separators)."""
    decoder, documents, index = json.JSONDecoder(), [], 0
    while (start := output.find("{", index)) != -1:
        try:
            document, index = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        documents.append(document)
    return documents


def test_the_embedded_chain_commands_work_when_pasted(tmp_path: Path) -> None:
    blocks = readme_blocks("embedded")
    assert len(blocks) == 2, "the Try it block and the closeposition example"
    port, cwd = _free_port(), _workdir(tmp_path)
    env = _env(RELAYER_PORT=port)  # the default random walk on: the examples' bounds must survive it
    wait = f"for _ in $(seq 300); do curl -sf localhost:{port}/health >/dev/null && break; sleep 0.2; done"
    pasted = "\n".join(blocks).replace(f"localhost:{README_PORT}", f"localhost:{port}")
    script = f".venv/bin/relayer serve &\n{wait}\n{pasted}"

    documents = _json_documents(_run_pasted(script, cwd, env, timeout_s=120))

    answers = [d for d in documents if "error" in d or "calldata" in d or "success" in d or "positions" in d]
    assert [d for d in answers if "error" in d] == []
    built, trade, positions, example = answers
    assert built["preview"]["sizeDelta"] == example["preview"]["sizeDelta"] == "0.25"
    assert (trade["success"], trade["closed_pct"], trade["closed_qty"]) == (True, "33", "0.165")
    assert {p["size"] for p in positions["positions"] if p["market"] == "BTCUSDT"} == {"0.335"}


def test_the_anvil_walk_through_works_when_pasted(tmp_path: Path) -> None:
    (block,) = readme_blocks("anvil")
    require_tool(ROOT / "node_modules" / ".bin" / "anvil", "anvil (npm @foundry-rs/anvil)")
    port, anvil_port, cwd = _free_port(), _free_port(), _workdir(tmp_path)
    script = block.replace(f"localhost:{README_PORT}", f"localhost:{port}").replace(ANVIL_PORT, anvil_port)

    output = _run_pasted(script, cwd, _env(RELAYER_PORT=port), timeout_s=180)

    fill = _json_documents(output)[-1]
    assert (fill["success"], fill["closed_qty"], fill["exit_price"]) == (True, "0.21", "96500"), output
    assert fill["realized_pnl_usd"] == "105"
    assert "positionId" in output  # what `relayer open` printed
