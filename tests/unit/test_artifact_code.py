"""Recognising the vault's runtime code on chain (immutables excepted), on both backends."""

from __future__ import annotations

from eth_utils.address import to_checksum_address

from relayer.chain.artifact import load_artifact
from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment


def _deployed_code(chain: Chain, deployment: Deployment) -> bytes:
    return bytes(chain.w3.eth.get_code(to_checksum_address(deployment.address)))


def test_deployed_vault_matches(chain: Chain, deployment: Deployment) -> None:
    code = _deployed_code(chain, deployment)
    artifact = load_artifact()
    assert artifact.matches_runtime_code(code)
    # The immutables really differ from the placeholder build, so the exception is doing work.
    expected = bytes.fromhex(artifact.deployed_bytecode[2:])
    assert artifact.immutable_ranges
    assert code != expected


def test_other_immutable_values_still_match(chain: Chain, deployment: Deployment) -> None:
    code = bytearray(_deployed_code(chain, deployment))
    for start, length in load_artifact().immutable_ranges:
        code[start : start + length] = b"\x5a" * length
    assert load_artifact().matches_runtime_code(bytes(code))


def test_a_changed_byte_outside_the_immutables_does_not_match(chain: Chain, deployment: Deployment) -> None:
    artifact = load_artifact()
    code = bytearray(_deployed_code(chain, deployment))
    immutable = {i for start, length in artifact.immutable_ranges for i in range(start, start + length)}
    for index in (0, len(code) // 2, len(code) - 1):
        if index in immutable:
            continue
        tampered = bytearray(code)
        tampered[index] ^= 0x01
        assert not artifact.matches_runtime_code(bytes(tampered))


def test_wrong_length_or_no_code_does_not_match(chain: Chain, deployment: Deployment) -> None:
    artifact = load_artifact()
    code = _deployed_code(chain, deployment)
    assert not artifact.matches_runtime_code(code + b"\x00")
    assert not artifact.matches_runtime_code(code[:-1])
    assert not artifact.matches_runtime_code(b"")
    account_code = bytes(chain.w3.eth.get_code(to_checksum_address(deployment.deployer)))
    assert not artifact.matches_runtime_code(account_code)


def test_artifact_identity() -> None:
    artifact = load_artifact()
    assert artifact.artifact_hash == f"{artifact.source_sha256}:{artifact.compiler_version}"
    assert artifact.bytecode.startswith("0x")
    assert any(item["type"] == "error" for item in artifact.abi)
