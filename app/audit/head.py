"""The signed head of the audit-report chain: where the chain ends, vouched for by the service.

A chain of reports shows by itself whether a report is missing in the middle (the links) or at
the start (the genesis report has no ``previous_sha256`` and sequence 1). Only the service can
say where it ends, so ``GET /v1/audit-chain/head`` serves a document signed with the report
signing key::

    {
      "schema": "forgetd.audit-chain-head/v1",
      "count": 12,                  # reports in the chain
      "sequence": 12,               # the last report's sequence number (0: no report yet)
      "sha256": "<sha256 of the last report, or null>",
      "signed_at": "2026-12-05T01:20:00Z",
      "integrity": {"algorithm": "Ed25519", "key_id": "...", "signature": "<base64>"}
    }

The signature covers ``canonical_json`` of every field but ``integrity``. A chain checked against
a head must reach the head's report: a chain that stops before it lost its last report(s).
Reports after the head are newer than the head, which is why a verifier fetches the head first
and the chain second. ``signed_at`` tells how fresh the head is: an old head vouches only for
the chain as it was then.

This module imports neither torch nor numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.audit.integrity import (
    ALGORITHM,
    SigningKey,
    canonical_json,
    is_sequence_number,
    verify_signed,
)

__all__ = ["HEAD_SCHEMA_VERSION", "chain_end_problems", "seal_head", "verify_head"]

HEAD_SCHEMA_VERSION = "forgetd.audit-chain-head/v1"
_SIGNED_KEYS = frozenset({"schema", "count", "sequence", "sha256", "signed_at"})


def _signed_bytes(head: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in head.items() if k != "integrity"})


def seal_head(
    *, count: int, sequence: int, sha256: str | None, signed_at: datetime, key: SigningKey
) -> dict[str, Any]:
    """The signed head of a chain of ``count`` reports whose last one has ``sequence`` and
    ``sha256`` (0 and None for an empty chain)."""
    head: dict[str, Any] = {
        "schema": HEAD_SCHEMA_VERSION,
        "count": count,
        "sequence": sequence,
        "sha256": sha256,
        "signed_at": signed_at.isoformat().replace("+00:00", "Z"),
    }
    payload = _signed_bytes(head)
    head["integrity"] = {
        "algorithm": ALGORITHM,
        "key_id": key.key_id(),
        "signature": key.sign(payload),
    }
    return head


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def verify_head(head: Any, public_pem: str) -> list[str]:
    """Check a head document's fields and signature; returns the problems (empty when valid)."""
    if not isinstance(head, dict):
        return ["head: not a JSON object"]
    problems: list[str] = []
    if head.get("schema") != HEAD_SCHEMA_VERSION:
        problems.append(f"head: schema is {head.get('schema')!r}, expected {HEAD_SCHEMA_VERSION!r}")
    extra = sorted(set(head) - _SIGNED_KEYS - {"integrity"})
    if extra:
        problems.append(f"head: unexpected unsigned field(s): {', '.join(map(str, extra))}")
    missing = sorted(_SIGNED_KEYS - set(head))
    if missing:
        problems.append(f"head: lacks {', '.join(missing)}")
    if not (_is_count(head.get("count")) and _is_count(head.get("sequence"))):
        problems.append("head: count and sequence must be integers from 0")
    sha = head.get("sha256")
    if (sha is None) != (head.get("sequence") == 0):
        problems.append("head: sha256 is null exactly when the chain is empty (sequence 0)")
    integ = head.get("integrity")
    if not isinstance(integ, dict):
        return [*problems, "head: integrity block is missing or not a JSON object"]
    try:
        payload: bytes | None = _signed_bytes(head)
    except (ValueError, TypeError) as exc:
        problems.append(f"head: cannot be canonicalized: {exc}")
        payload = None
    return problems + [f"head: {p}" for p in verify_signed(payload, integ, public_pem)]


def _sequence(envelope: Any) -> int | None:
    integ = envelope.get("integrity") if isinstance(envelope, dict) else None
    value = integ.get("sequence") if isinstance(integ, dict) else None
    return value if is_sequence_number(value) else None


def _sha256(envelope: Any) -> Any:
    integ = envelope.get("integrity") if isinstance(envelope, dict) else None
    return integ.get("sha256") if isinstance(integ, dict) else None


def chain_end_problems(
    envelopes: Sequence[Any], head: dict[str, Any], *, partial: bool = False
) -> list[str]:
    """Whether the chain (oldest first) reaches the head's report; returns the problems.

    Reports after the head's are allowed (they were added after the head was signed). Without
    ``partial`` the chain starts at its genesis report, so the head's report must also sit at
    position ``count`` of it.
    """
    want_sha, want_seq, count = head.get("sha256"), head.get("sequence"), head.get("count")
    if want_sha is None:
        return []  # the head was signed before the first report: every report is newer
    hashes = [_sha256(e) for e in envelopes]
    if want_sha not in hashes:
        last = _sequence(envelopes[-1]) if envelopes else None
        where = f" (it ends at sequence {last})" if last is not None else ""
        return [
            f"the chain does not reach the signed head (sequence {want_seq}, sha256 "
            f"{want_sha}){where}: its last report(s) are missing"
        ]
    at = hashes.index(want_sha)
    problems: list[str] = []
    seq = _sequence(envelopes[at])
    if seq is not None and seq != want_seq:
        problems.append(f"report #{at} is the head's report but has sequence {seq}, not {want_seq}")
    if not partial and at + 1 != count:
        problems.append(
            f"the head's report is report #{at}, so the chain holds {at + 1} report(s) up to it, "
            f"but the head counts {count}"
        )
    return problems
