"""Both ends of the audit-report chain are tamper-evident: the chain starts at its genesis
report (sequence 1, no predecessor) and, given the service's signed head, ends at the head's
report. Dropping a report at the start, in the middle or at the end is reported, and so is a
head that was changed or signed by another key."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.audit.head import HEAD_SCHEMA_VERSION, seal_head, verify_head
from app.audit.integrity import SigningKey, seal_report, verify_chain, verify_envelope
from app.audit.verify import verify_file
from app.cli import cli

NOW = datetime(2026, 12, 5, 1, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def _chain(key: SigningKey, n: int, *, first: int = 1, legacy: int = 0) -> list[dict]:
    """``n`` reports as the worker seals them; the first ``legacy`` carry no sequence (sealed
    before reports were numbered)."""
    chain: list[dict] = []
    previous = None
    for i in range(n):
        number = first + i
        sequence = None if i < legacy else number
        env = seal_report({"n": number}, previous_sha256=previous, key=key, sequence=sequence)
        chain.append(env)
        previous = env["integrity"]["sha256"]
    return chain


def _head(key: SigningKey, chain: list[dict]) -> dict:
    last = chain[-1]["integrity"]
    return seal_head(
        count=len(chain),
        sequence=last.get("sequence", len(chain)),
        sha256=last["sha256"],
        signed_at=NOW,
        key=key,
    )


def _files(tmp_path: Path, key: SigningKey, chain: list, head: dict | None = None):
    (tmp_path / "key.pem").write_text(key.public_pem())
    (tmp_path / "chain.json").write_text(json.dumps(chain))
    head_path = None
    if head is not None:
        head_path = tmp_path / "head.json"
        head_path.write_text(json.dumps(head))
    return tmp_path / "chain.json", tmp_path / "key.pem", head_path


def _verify(tmp_path: Path, key: SigningKey, chain: list, head: dict | None = None, **kw):
    chain_path, key_path, head_path = _files(tmp_path, key, chain, head)
    return verify_file(chain_path, key_path, head_path=head_path, **kw)


def test_reports_carry_their_signed_sequence_number(key: SigningKey) -> None:
    chain = _chain(key, 3)
    assert [e["integrity"]["sequence"] for e in chain] == [1, 2, 3]
    assert chain[0]["integrity"]["previous_sha256"] is None
    renumbered = copy.deepcopy(chain[1])
    renumbered["integrity"]["sequence"] = 1
    assert any("sha256 mismatch" in p for p in verify_envelope(renumbered, key.public_pem()))
    stripped = copy.deepcopy(chain[1])
    del stripped["integrity"]["sequence"]
    assert verify_envelope(stripped, key.public_pem())
    with pytest.raises(ValueError):  # only the genesis report goes without a predecessor
        seal_report({}, previous_sha256=None, key=key, sequence=2)


def test_the_whole_chain_with_its_head_verifies(tmp_path: Path, key: SigningKey) -> None:
    chain = _chain(key, 4)
    assert _verify(tmp_path, key, chain, _head(key, chain)) == []
    assert _verify(tmp_path, key, chain) == []
    # Reports added after the head was signed are newer than it, not a problem.
    assert _verify(tmp_path, key, chain, _head(key, chain[:3])) == []


def test_dropping_the_first_report_is_caught(tmp_path: Path, key: SigningKey) -> None:
    chain = _chain(key, 4)
    problems = _verify(tmp_path, key, chain[1:], _head(key, chain))
    assert any("genesis" in p for p in problems), problems
    assert any("sequence 2, expected 1" in p for p in problems), problems
    # Without the head too: the start of the chain speaks for itself.
    assert any("genesis" in p for p in _verify(tmp_path, key, chain[1:]))


def test_dropping_the_last_report_is_caught_given_the_head(tmp_path: Path, key: SigningKey) -> None:
    chain = _chain(key, 4)
    problems = _verify(tmp_path, key, chain[:-1], _head(key, chain))
    assert problems and any("does not reach the signed head" in p for p in problems), problems
    assert any("ends at sequence 3" in p for p in problems)
    problems = _verify(tmp_path, key, chain[:1], _head(key, chain))
    assert any("does not reach the signed head" in p for p in problems), problems


def test_dropping_a_middle_report_is_caught(tmp_path: Path, key: SigningKey) -> None:
    chain = _chain(key, 4)
    problems = _verify(tmp_path, key, [chain[0], chain[2], chain[3]], _head(key, chain))
    assert any("chain is broken" in p for p in problems), problems
    assert any("sequence 3, expected 2" in p for p in problems), problems
    assert any("head counts 4" in p for p in problems), problems


@pytest.mark.parametrize(
    ("field", "value"),
    [("count", 3), ("sequence", 3), ("sha256", "0" * 64), ("signed_at", "2030-01-01T00:00:00Z")],
)
def test_a_tampered_head_is_caught(tmp_path: Path, key: SigningKey, field: str, value) -> None:
    chain = _chain(key, 4)
    head = _head(key, chain)
    head[field] = value
    problems = _verify(tmp_path, key, chain[:3], head)
    assert any("signature does not verify" in p for p in problems), problems


def test_a_head_signed_by_another_key_or_with_extra_fields_is_caught(
    tmp_path: Path, key: SigningKey
) -> None:
    chain = _chain(key, 3)
    forged = _head(SigningKey.generate(), chain)
    problems = _verify(tmp_path, key, chain, forged)
    assert any("head: key_id" in p for p in problems) and any("signature" in p for p in problems)
    padded = _head(key, chain)
    padded["note"] = "trust me"
    assert any("unsigned field" in p for p in _verify(tmp_path, key, chain, padded))
    assert verify_head("nope", key.public_pem())
    assert verify_head({**_head(key, chain), "schema": "x"}, key.public_pem())
    assert _head(key, chain)["schema"] == HEAD_SCHEMA_VERSION


def test_a_stretch_of_the_chain_verifies_only_when_said_to_be_partial(
    tmp_path: Path, key: SigningKey
) -> None:
    chain = _chain(key, 5)
    stretch = chain[2:4]
    assert _verify(tmp_path, key, stretch)  # not the whole chain
    assert _verify(tmp_path, key, stretch, partial=True) == []
    assert _verify(tmp_path, key, stretch, _head(key, chain[:4]), partial=True) == []
    problems = _verify(tmp_path, key, stretch, _head(key, chain), partial=True)
    assert any("does not reach the signed head" in p for p in problems), problems
    gap = [chain[1], chain[3]]
    assert any("chain is broken" in p for p in _verify(tmp_path, key, gap, partial=True))


def test_reports_from_before_numbering_still_verify(tmp_path: Path, key: SigningKey) -> None:
    chain = _chain(key, 5, legacy=2)
    assert "sequence" not in chain[0]["integrity"] and chain[2]["integrity"]["sequence"] == 3
    assert verify_chain(chain) == []
    assert _verify(tmp_path, key, chain, _head(key, chain)) == []
    assert any("genesis" in p for p in _verify(tmp_path, key, chain[1:]))
    assert _verify(tmp_path, key, chain[:-1], _head(key, chain))


def test_an_empty_chain_head(tmp_path: Path, key: SigningKey) -> None:
    head = seal_head(count=0, sequence=0, sha256=None, signed_at=NOW, key=key)
    assert verify_head(head, key.public_pem()) == []
    assert _verify(tmp_path, key, _chain(key, 2), head) == []  # both reports are newer
    assert verify_head({**head, "sequence": 1}, key.public_pem())


def test_the_cli_takes_the_head(tmp_path: Path, key: SigningKey) -> None:
    chain = _chain(key, 3)
    chain_path, key_path, head_path = _files(tmp_path, key, chain, _head(key, chain))
    runner = CliRunner()
    args = ["verify-report", str(chain_path), "--public-key", str(key_path)]
    done = runner.invoke(cli, [*args, "--head", str(head_path)])
    assert done.exit_code == 0, done.output
    assert "up to the signed head" in done.output
    chain_path.write_text(json.dumps(chain[:-1]))
    done = runner.invoke(cli, [*args, "--head", str(head_path)])
    assert done.exit_code == 1 and "does not reach the signed head" in done.output
    chain_path.write_text(json.dumps(chain[1:]))
    assert runner.invoke(cli, args).exit_code == 1
    assert runner.invoke(cli, [*args, "--partial"]).exit_code == 0
    head_path.write_text("{not json")
    done = runner.invoke(cli, [*args, "--head", str(head_path)])
    assert done.exit_code == 1 and "not JSON" in done.output
