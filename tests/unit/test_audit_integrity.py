"""Audit-report integrity: canonical JSON, signing key handling, envelopes and the chain."""

from __future__ import annotations

import copy
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from app.audit.integrity import (
    SigningKey,
    canonical_json,
    key_id_from_public_pem,
    seal_report,
    sha256_hex,
    verify_chain,
    verify_envelope,
)
from app.audit.schema import REPORT_SCHEMA_VERSION, report_json_schema

BODY = {
    "request": {
        "id": 7,
        "target": {"kind": "samples", "n_samples": 2, "sample_sha256": ["a" * 64]},
    },
    "method": {"name": "sisa", "exact": True},
    "notes": ["Zoë's request", "ünïcode ok"],
    "metrics": {"auc": 0.51, "n": 3, "flag": True, "none": None},
}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def test_canonical_json_is_stable_under_key_order() -> None:
    a = {"b": 1, "a": {"y": [1, 2, {"d": 1, "c": 2}], "x": "é"}}
    b = {"a": {"x": "é", "y": [1, 2, {"c": 2, "d": 1}]}, "b": 1}
    assert canonical_json(a) == canonical_json(b)
    assert canonical_json(a) == '{"a":{"x":"é","y":[1,2,{"c":2,"d":1}]},"b":1}'.encode()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_canonical_json_refuses_non_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": [1.0, bad]})


def test_sha256_hex() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_seal_and_verify_round_trip(key: SigningKey) -> None:
    env = seal_report(BODY, previous_sha256=None, key=key)
    assert env["schema"] == REPORT_SCHEMA_VERSION
    integ = env["integrity"]
    assert integ["algorithm"] == "Ed25519"
    assert integ["key_id"] == key.key_id() == key_id_from_public_pem(key.public_pem())
    assert len(integ["key_id"]) == 16
    assert integ["previous_sha256"] is None
    assert integ["sha256"] == sha256_hex(canonical_json({"report": BODY, "previous_sha256": None}))
    assert verify_envelope(env, key.public_pem()) == []
    # survives a JSON round trip with other formatting
    again = json.loads(json.dumps(env, indent=3, ensure_ascii=True))
    assert verify_envelope(again, key.public_pem()) == []


def test_one_character_change_anywhere_breaks_verification(key: SigningKey) -> None:
    prev = "0" * 64
    env = seal_report(BODY, previous_sha256=prev, key=key)
    text = json.dumps(env, sort_keys=True)
    # flip one character inside every JSON string value, one at a time
    positions = []
    in_str = False
    start = 0
    for i, ch in enumerate(text):
        if ch == '"' and text[i - 1] != "\\":
            if not in_str:
                in_str, start = True, i + 1
            else:
                in_str = False
                if i > start and text[i + 1 : i + 2] != ":":  # a value, not a key
                    positions.append(start + (i - start) // 2)
    # numbers too: the 0.51
    positions.append(text.index("0.51") + 3)
    assert len(positions) >= 10
    for pos in positions:
        ch = text[pos]
        repl = "1" if ch != "1" else "2"
        if ch.isalpha():
            repl = "x" if ch != "x" else "y"
        tampered = json.loads(text[:pos] + repl + text[pos + 1 :])
        problems = verify_envelope(tampered, key.public_pem())
        assert problems, f"change at {pos} ({text[pos - 10 : pos + 10]!r}) went unnoticed"


def test_structural_tampering_is_detected(key: SigningKey) -> None:
    env = seal_report(BODY, previous_sha256=None, key=key)
    pem = key.public_pem()
    cases = []
    e = copy.deepcopy(env)
    e["report"]["notes"].append("added")
    cases.append(e)
    e = copy.deepcopy(env)
    del e["report"]["metrics"]["none"]
    cases.append(e)
    e = copy.deepcopy(env)
    e["integrity"]["previous_sha256"] = "f" * 64  # chain link is signed
    cases.append(e)
    e = copy.deepcopy(env)
    e["schema"] = "forgetd.audit-report/v0"
    cases.append(e)
    e = copy.deepcopy(env)
    e["unsigned_extra"] = "trust me"
    cases.append(e)
    e = copy.deepcopy(env)
    e["integrity"]["signature"] = "not base64!!"
    cases.append(e)
    e = copy.deepcopy(env)
    del e["integrity"]
    cases.append(e)
    for case in cases:
        assert verify_envelope(case, pem), case
    assert verify_envelope("nope", pem)  # type: ignore[arg-type]


def test_wrong_key_fails(key: SigningKey) -> None:
    env = seal_report(BODY, previous_sha256=None, key=key)
    other = SigningKey.generate()
    problems = verify_envelope(env, other.public_pem())
    assert any("signature" in p for p in problems)
    assert any("key_id" in p for p in problems)
    # a forger re-signing with their own key must not pass against the real key
    forged = seal_report({**BODY, "notes": ["forged"]}, previous_sha256=None, key=other)
    assert verify_envelope(forged, key.public_pem())
    assert verify_envelope(env, "garbage")


def test_chain_and_reordering(key: SigningKey) -> None:
    chain = []
    prev = None
    for i in range(4):
        env = seal_report({"n": i}, previous_sha256=prev, key=key)
        chain.append(env)
        prev = env["integrity"]["sha256"]
    assert verify_chain(chain) == []
    assert (
        verify_chain(chain[1:], partial=True) == []
    )  # a stretch: the first link may point anywhere
    assert verify_chain(chain[1:])  # the whole chain must start at its genesis report
    assert verify_chain([]) == []
    reordered = [chain[0], chain[2], chain[1], chain[3]]
    assert verify_chain(reordered)
    assert verify_chain([chain[0], chain[2], chain[3]])  # a removed report breaks the chain
    # a report whose content changed no longer matches the hash the next one points to
    tampered = copy.deepcopy(chain)
    tampered[1]["report"]["n"] = 99
    assert verify_chain(tampered)
    for env in chain:
        assert verify_envelope(env, key.public_pem()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_key_file_created_owner_only(tmp_path) -> None:
    path = tmp_path / "keys" / "sub" / "signing.pem"
    k1 = SigningKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in path.parent.iterdir()] == ["signing.pem"]  # no temp files left
    k2 = SigningKey.load_or_create(path)
    assert k2.key_id() == k1.key_id()
    assert "PRIVATE" not in repr(k1)
    data = b"hello"
    env = seal_report({"x": 1}, previous_sha256=None, key=k1)
    assert verify_envelope(env, k2.public_pem()) == []
    assert k1.sign(data) == k2.sign(data)  # Ed25519 is deterministic


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(tmp_path, mode: int) -> None:
    path = tmp_path / "signing.pem"
    SigningKey.load_or_create(path)
    os.chmod(path, mode)
    with pytest.raises(ValueError, match=str(path)):
        SigningKey.load_or_create(path)


def test_not_a_key_is_refused(tmp_path) -> None:
    path = tmp_path / "signing.pem"
    path.write_bytes(b"not a key")
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match=str(path)):
        SigningKey.load_or_create(path)


def test_report_json_schema() -> None:
    schema = report_json_schema()
    assert schema["$id"] == REPORT_SCHEMA_VERSION
    for name in (
        "request",
        "method",
        "versions",
        "lineage",
        "efficacy",
        "membership_inference",
        "cost",
        "notes",
    ):
        assert name in schema["properties"]
    json.dumps(schema)


def test_audit_package_imports_no_numpy_or_torch() -> None:
    import subprocess

    code = (
        "import sys, app.audit, app.audit.schema, app.audit.integrity; "
        "bad = [m for m in ('numpy', 'torch', 'matplotlib') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_signature_respelled_in_its_unused_base64_bits_is_refused():
    import base64

    from app.audit.integrity import SigningKey, seal_report, verify_envelope

    key = SigningKey.generate()
    envelope = seal_report({"n": 1}, previous_sha256=None, key=key)
    text = envelope["integrity"]["signature"]
    assert text.endswith("==")  # 64 bytes: the last digit before the padding has 2 unused bits
    last = text[-3]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    respelled = alphabet[alphabet.index(last) ^ 1]
    changed = text[:-3] + respelled + "=="
    assert base64.b64decode(changed) == base64.b64decode(text)  # same bytes, other spelling
    tampered = {**envelope, "integrity": {**envelope["integrity"], "signature": changed}}
    assert verify_envelope(envelope, key.public_pem()) == []
    assert verify_envelope(tampered, key.public_pem()) != []
