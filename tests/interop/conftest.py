"""Fixtures of the signing interop suite: the REST app over the session's chain, and the JavaScript signers.

viem and ethers come from package.json's devDependencies (installed by scripts/setup.sh, like anvil). A
missing Node or package fails these tests rather than skipping them: a skip would hide exactly the regression
this suite exists to catch, a wire shape that only Python can sign.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.faces.api.app import create_app
from tests.api.conftest import settings_for
from tests.conftest import ROOT

SIGN_SCRIPT = ROOT / "tests" / "interop" / "sign.mjs"
JS_PACKAGES = ("viem", "ethers")
NODE_TIMEOUT_S = 120
"""Generous: importing viem and ethers takes about a second, far more on a busy 2-core CI box."""

JsSign = Callable[[str, list[str]], list[dict[str, Any]]]


@pytest.fixture
def client(chain: Chain, deployment: Deployment) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(chain, deployment), chain=chain)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def js_sign() -> JsSign:
    """`js_sign(key, bodies)`: sign.mjs's report for each raw HTTP answer body (see its header)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the interop tests need Node 20 (see scripts/setup.sh)")
    for package in JS_PACKAGES:
        if not (ROOT / "node_modules" / package / "package.json").exists():
            pytest.fail(f"npm package {package} is not installed: run scripts/setup.sh")

    def _sign(key: str, bodies: list[str]) -> list[dict[str, Any]]:
        request = json.dumps({"key": key, "answers": bodies})
        done = subprocess.run(
            [node, str(SIGN_SCRIPT)],
            input=request,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
            cwd=ROOT,
            check=False,
        )
        assert done.returncode == 0, f"sign.mjs failed:\n{done.stderr}"
        results: list[dict[str, Any]] = json.loads(done.stdout)
        assert len(results) == len(bodies)
        return results

    return _sign
