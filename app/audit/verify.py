"""Offline verification of audit report files (``forgetd verify-report``).

A file holds one envelope, as served by ``GET /v1/deletion-requests/{id}/report``, or a JSON list
of envelopes oldest first (the deployment's hash chain, as served by ``GET /v1/audit-chain``).
Every envelope's sha256 and Ed25519 signature are checked against a public key. A list must be
the chain from its genesis report on (or, when told it is partial, a stretch of it), each report
linking by ``previous_sha256`` to the one before and numbered one more than it; given the signed
head (``GET /v1/audit-chain/head``), the list must reach the head's report, so a report dropped
at either end is reported too.

The check is strict about the file itself, not only about the signed content: the file must be
exactly a standard JSON serialization of what it contains (the compact form the API serves, or
an indented form such as ``json.dumps(indent=2)`` or ``jq .`` writes, keys in any order, with or
without a final newline). So *any* change of bytes is reported, including edits that leave the
parsed content equal (``1e-05`` spelled ``1E-05``, an escaped character, a duplicated key whose
last value wins, odd whitespace), not only the ones the signature catches.

This module imports neither torch nor numpy: auditors run it without the worker's stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.audit.head import chain_end_problems, verify_head
from app.audit.integrity import key_id_from_public_pem, verify_chain, verify_envelope

__all__ = ["load_public_key", "parse_report_file", "verify_file", "verify_reports"]


class _FileProblem(ValueError):
    """The file cannot be read as a report file; the message says why."""


# --------------------------------------------------------------------------- parsing


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise _FileProblem(f"duplicate JSON key(s) {', '.join(map(repr, dupes))}")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise _FileProblem(f"{name} is not valid JSON")


def _serializations(obj: Any) -> set[str]:
    """Every standard serialization accepted for a report file's content."""
    forms: set[str] = set()
    for sort_keys in (False, True):
        for ensure_ascii in (False, True):
            common = {"sort_keys": sort_keys, "ensure_ascii": ensure_ascii, "allow_nan": False}
            forms.add(json.dumps(obj, separators=(",", ":"), **common))  # type: ignore[arg-type]
            forms.add(json.dumps(obj, **common))  # type: ignore[arg-type]
            for indent in (2, 4):
                forms.add(json.dumps(obj, indent=indent, **common))  # type: ignore[arg-type]
    return forms


def parse_report_file(data: bytes) -> list[Any]:
    """The envelopes in a report file's bytes, oldest first (see :func:`parse_report_content`)."""
    content = parse_report_content(data)
    return content if isinstance(content, list) else [content]


def parse_report_content(data: bytes) -> Any:
    """The JSON content of a report file's bytes: one envelope, or a list of them.

    Raises ``ValueError`` when the bytes are not UTF-8 JSON, hold duplicate keys or non-JSON
    constants (NaN, Infinity), or are not byte for byte a standard serialization of their content.
    """
    try:
        textual = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the file is not UTF-8 text (byte {exc.start})") from None
    try:
        content = json.loads(
            textual, object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except _FileProblem as exc:
        raise ValueError(f"the file is not a report file: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"the file is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    body = textual[:-1] if textual.endswith("\n") else textual
    if body not in _serializations(content):
        raise ValueError(
            "the file's bytes are not a standard JSON serialization of its content: it was "
            "edited (a number, escape, key or whitespace changed) after it was written"
        )
    return content


# --------------------------------------------------------------------------- keys


def load_public_key(path: Path) -> list[str]:
    """PEM public key(s) from ``path``: a PEM file, or the JSON that ``GET /v1/keys`` returns."""
    raw = Path(path).read_text(encoding="utf-8")
    if not raw.lstrip().startswith("{"):
        return [raw]
    try:
        listing = json.loads(raw)
        pems = [str(k["public_key_pem"]) for k in listing["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: neither a PEM key nor a /v1/keys document ({exc})") from None
    if not pems:
        raise ValueError(f"{path}: the /v1/keys document lists no key")
    return pems


def _deployment_key() -> list[str]:
    """This deployment's public key, without creating a key when there is none."""
    from app.services.keys import signing_key
    from app.settings import get_settings

    settings = get_settings()
    path = settings.signing_key_path
    if path is None or not Path(path).exists():
        raise ValueError(
            f"no --public-key given and this deployment has no signing key at {path}; "
            "pass the public key published at GET /v1/keys"
        )
    return [signing_key(settings).public_pem()]


def _key_for(envelope: Any, pems: list[str]) -> str:
    """The key whose id the envelope names, else the first (whose mismatch is then reported)."""
    integ = envelope.get("integrity") if isinstance(envelope, dict) else None
    wanted = integ.get("key_id") if isinstance(integ, dict) else None
    for pem in pems:
        try:
            if key_id_from_public_pem(pem) == wanted:
                return pem
        except (ValueError, TypeError):
            continue
    return pems[0]


# --------------------------------------------------------------------------- verification


def verify_reports(
    envelopes: list[Any],
    pems: list[str],
    *,
    chain: bool | None = None,
    head: Any = None,
    partial: bool = False,
) -> list[str]:
    """Signature and hash check of every envelope, then, for a ``chain`` (default: more than
    one envelope), its start, links and numbering, and its end against a signed ``head``
    (a document of ``GET /v1/audit-chain/head``); returns the problems."""
    if not envelopes:
        return ["the file holds an empty list: no report to verify"]
    chain = len(envelopes) > 1 if chain is None else chain
    problems: list[str] = []
    for i, envelope in enumerate(envelopes):
        prefix = f"report #{i}: " if chain else ""
        problems.extend(prefix + p for p in verify_envelope(envelope, _key_for(envelope, pems)))
    if chain:
        # verify_chain repeats each envelope's own hash problems; keep only the link checks.
        own = set(problems)
        problems.extend(p for p in verify_chain(envelopes, partial=partial) if p not in own)
    if head is not None:
        head_problems = verify_head(head, _key_for(head, pems))
        problems.extend(head_problems)
        if not chain:
            problems.append("a head is checked against a chain: give the JSON list of reports")
        elif not head_problems:
            problems.extend(chain_end_problems(envelopes, head, partial=partial))
    return problems


def _load_head(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the head {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"the head {path} is not JSON: {exc}") from None


def verify_file(
    path: Path,
    public_key_path: Path | None,
    *,
    head_path: Path | None = None,
    partial: bool = False,
) -> list[str]:
    """Verify a report file (one envelope or a chain) offline; returns the problems found.

    With no ``public_key_path`` the deployment's own public key is used (when this machine has
    one). A list is checked as the chain from its genesis report on, or as a stretch of it when
    ``partial``; with ``head_path`` (the JSON of ``GET /v1/audit-chain/head``) it must reach the
    signed head. An empty list means the file is exactly as the service signed and chained it.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return [f"cannot read {path}: {exc.strerror or exc}"]
    try:
        pems = load_public_key(public_key_path) if public_key_path else _deployment_key()
        head = _load_head(head_path) if head_path else None
    except OSError as exc:
        return [f"cannot read the public key {public_key_path}: {exc.strerror or exc}"]
    except ValueError as exc:
        return [str(exc)]
    problems: list[str] = []
    try:
        content = parse_report_content(data)
    except ValueError as exc:
        # Still check the content when it parses: the signature problems help locate the edit.
        problems = [str(exc)]
        try:
            content = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return problems
    envelopes = content if isinstance(content, list) else [content]
    chain = isinstance(content, list)
    return problems + verify_reports(envelopes, pems, chain=chain, head=head, partial=partial)
