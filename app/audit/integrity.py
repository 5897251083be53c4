"""Integrity of audit reports: canonical JSON, SHA-256, Ed25519 signatures and the hash chain.

A report *body* (a plain JSON object, see :mod:`app.audit.schema`) is sealed into an *envelope*::

    {
      "schema": "forgetd.audit-report/v1",
      "report": {...body...},
      "integrity": {
        "algorithm": "Ed25519",
        "key_id": "<first 16 hex of sha256(raw public key)>",
        "previous_sha256": "<sha256 of the previous report in this deployment's chain, or null>",
        "sequence": <position in the chain: 1 for the genesis report, then +1 per report>,
        "sha256": "<sha256 of the signed bytes>",
        "signature": "<base64 Ed25519 signature of the signed bytes>"
      }
    }

The signed bytes are ``canonical_json({"report": body, "previous_sha256": previous_sha256,
"sequence": sequence})``, so the link to the previous report and the report's position are
covered by the hash and the signature. Reports sealed before positions existed have no
``sequence``: their signed bytes lack the key, and they still verify. Anyone holding the
published public key (``GET /v1/keys``) can check an envelope offline with :func:`verify_envelope`
and a run of envelopes with :func:`verify_chain`.

This module imports neither torch nor numpy.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from app.audit.schema import REPORT_SCHEMA_VERSION

__all__ = [
    "ALGORITHM",
    "REPORT_SCHEMA_VERSION",
    "SigningKey",
    "canonical_json",
    "is_sequence_number",
    "key_id_from_public_pem",
    "payload_bytes",
    "seal_report",
    "sha256_hex",
    "verify_chain",
    "verify_envelope",
    "verify_signed",
]

ALGORITHM = "Ed25519"
_ENVELOPE_KEYS = frozenset({"schema", "report", "integrity"})
_INTEGRITY_KEYS = frozenset({"algorithm", "key_id", "previous_sha256", "sha256", "signature"})
# Absent from the reports sealed before the chain numbered its reports.
_OPTIONAL_INTEGRITY_KEYS = frozenset({"sequence"})


# --------------------------------------------------------------------------- canonical form


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` deterministically: sorted keys, no whitespace, UTF-8, no ASCII escaping.

    Raises ``ValueError`` for NaN or +/-Infinity (not JSON) and ``TypeError`` for objects that
    are not JSON types (convert numpy values first).
    """
    try:
        text = json.dumps(
            obj,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except ValueError as exc:
        raise ValueError(f"cannot serialize to canonical JSON: {exc}") from exc
    return text.encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def payload_bytes(body: Any, previous_sha256: str | None, sequence: int | None = None) -> bytes:
    """The exact bytes that are hashed and signed for a report body, its chain link and its
    position (``None`` only for a report sealed before positions existed)."""
    signed: dict[str, Any] = {"report": body, "previous_sha256": previous_sha256}
    if sequence is not None:
        signed["sequence"] = sequence
    return canonical_json(signed)


def is_sequence_number(value: Any) -> bool:
    """A chain position: an integer from 1 (JSON booleans are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# --------------------------------------------------------------------------- keys


def _raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )


def _key_id(public_key: Ed25519PublicKey) -> str:
    return sha256_hex(_raw_public_bytes(public_key))[:16]


def _load_public_pem(public_pem: str | bytes) -> Ed25519PublicKey:
    data = public_pem.encode("ascii") if isinstance(public_pem, str) else public_pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("public key is not an Ed25519 key")
    return key


def key_id_from_public_pem(public_pem: str | bytes) -> str:
    """Key id (first 16 hex of sha256 of the raw 32-byte public key) of a PEM public key."""
    return _key_id(_load_public_pem(public_pem))


class SigningKey:
    """An Ed25519 private key used to sign audit reports."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("SigningKey needs an Ed25519PrivateKey")
        self._key = private_key

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh in-memory key (tests, ephemeral use)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str = "key") -> SigningKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: not an unencrypted PEM private key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{source}: not an Ed25519 private key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """Load the PEM (PKCS#8) key at ``path``, or create it if it does not exist.

        A new key is written atomically with mode 0o600 (a missing parent folder is created with
        mode 0o700); two processes racing to create it end up sharing one key. An existing key
        file that the group or others can read or write is refused with a ``ValueError`` that
        names the path (fix with ``chmod 600 <path>``).
        """
        path = Path(path).expanduser()
        try:
            return cls._load_checked(path)
        except FileNotFoundError:
            pass
        cls._make_parent(path.parent)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, 0o600)  # in case the umask or filesystem widened it
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                # link() never overwrites: if another process created the key meanwhile, use it.
                os.link(tmp, path)
            except FileExistsError:
                return cls._load_checked(path)
            except OSError:
                # filesystems without hard links: fall back to an atomic rename
                if path.exists():
                    return cls._load_checked(path)
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        cls._fsync_dir(path.parent)
        return cls(key)

    @staticmethod
    def _make_parent(parent: Path) -> None:
        if parent.is_dir():
            return
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        if os.name == "nt":
            return
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    @classmethod
    def _load_checked(cls, path: Path) -> SigningKey:
        st = os.stat(path)  # FileNotFoundError propagates to load_or_create
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"signing key {path} is not a regular file")
        if os.name != "nt" and st.st_mode & 0o077:
            raise ValueError(
                f"signing key {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):#o}); run: chmod 600 {path}"
            )
        return cls.from_pem(path.read_bytes(), source=f"signing key {path}")

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def public_pem(self) -> str:
        """SubjectPublicKeyInfo PEM of the public key (what ``GET /v1/keys`` publishes)."""
        return (
            self._key.public_key()
            .public_bytes(
                encoding=serialization.Encoding.PEM,
                format=serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            .decode("ascii")
        )

    def key_id(self) -> str:
        """First 16 hex characters of sha256 of the raw 32-byte public key."""
        return _key_id(self._key.public_key())

    def sign(self, data: bytes) -> str:
        """Base64 (standard alphabet, padded) Ed25519 signature of ``data``."""
        return base64.b64encode(self._key.sign(data)).decode("ascii")

    def __repr__(self) -> str:  # never show key material
        return f"SigningKey(key_id={self.key_id()!r})"


# --------------------------------------------------------------------------- seal / verify


def seal_report(
    body: dict, *, previous_sha256: str | None, key: SigningKey, sequence: int | None = None
) -> dict:
    """Wrap a report body into a signed, hash-chained envelope (see the module docstring).

    ``sequence`` is the report's position in the chain (1 for the genesis report, whose
    ``previous_sha256`` is None); leave it out only to reproduce a report from before positions.

    The returned ``report`` is the body as it reads back from its canonical JSON (tuples become
    lists, and so on), so the envelope verifies after any JSON round trip.
    """
    if not isinstance(body, dict):
        raise TypeError("report body must be a dict")
    if previous_sha256 is not None and not _is_sha256_hex(previous_sha256):
        raise ValueError("previous_sha256 must be 64 lower-case hex characters or None")
    if sequence is not None:
        if not is_sequence_number(sequence):
            raise ValueError("sequence must be an integer from 1")
        if (sequence == 1) != (previous_sha256 is None):
            raise ValueError("the genesis report (sequence 1), and only it, has no previous_sha256")
    payload = payload_bytes(body, previous_sha256, sequence)
    report = json.loads(payload.decode("utf-8"))["report"]
    integrity: dict[str, Any] = {
        "algorithm": ALGORITHM,
        "key_id": key.key_id(),
        "previous_sha256": previous_sha256,
        "sha256": sha256_hex(payload),
        "signature": key.sign(payload),
    }
    if sequence is not None:
        integrity["sequence"] = sequence
    return {"schema": REPORT_SCHEMA_VERSION, "report": report, "integrity": integrity}


def _is_sha256_hex(value: Any) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _recompute(envelope: Any) -> tuple[bytes | None, list[str]]:
    """Structural checks shared by verify_envelope and verify_chain; returns the signed bytes."""
    if not isinstance(envelope, dict):
        return None, ["envelope is not a JSON object"]
    problems: list[str] = []
    extra = sorted(set(envelope) - _ENVELOPE_KEYS)
    if extra:
        problems.append(f"unexpected unsigned top-level field(s): {', '.join(map(str, extra))}")
    if envelope.get("schema") != REPORT_SCHEMA_VERSION:
        problems.append(f"schema is {envelope.get('schema')!r}, expected {REPORT_SCHEMA_VERSION!r}")
    body = envelope.get("report")
    if not isinstance(body, dict):
        problems.append("report is missing or not a JSON object")
    integ = envelope.get("integrity")
    if not isinstance(integ, dict):
        problems.append("integrity block is missing or not a JSON object")
        return None, problems
    extra = sorted(set(integ) - _INTEGRITY_KEYS - _OPTIONAL_INTEGRITY_KEYS)
    if extra:
        problems.append(f"unexpected field(s) in integrity block: {', '.join(map(str, extra))}")
    missing = sorted(_INTEGRITY_KEYS - set(integ))
    if missing:
        problems.append(f"integrity block lacks: {', '.join(missing)}")
    previous = integ.get("previous_sha256")
    if previous is not None and not _is_sha256_hex(previous):
        problems.append("previous_sha256 is neither null nor a sha256 hex digest")
    sequence = integ.get("sequence")
    if "sequence" in integ and not is_sequence_number(sequence):
        problems.append(f"sequence {sequence!r} is not an integer from 1")
        sequence = None
    if not isinstance(body, dict):
        return None, problems
    try:
        payload = payload_bytes(body, previous, sequence)
    except (ValueError, TypeError) as exc:
        problems.append(f"report cannot be canonicalized: {exc}")
        return None, problems
    claimed = integ.get("sha256")
    actual = sha256_hex(payload)
    if claimed != actual:
        problems.append(f"sha256 mismatch: envelope says {claimed!r}, content hashes to {actual}")
    return payload, problems


def verify_signed(payload: bytes | None, integrity: dict, public_pem: str) -> list[str]:
    """Check an integrity block's algorithm, key id and Ed25519 signature over ``payload``
    (the recomputed signed bytes; None when they could not be rebuilt); returns the problems."""
    try:
        public_key = _load_public_pem(public_pem)
    except (ValueError, TypeError) as exc:
        return [f"public key is unusable: {exc}"]
    problems: list[str] = []
    if integrity.get("algorithm") != ALGORITHM:
        problems.append(f"algorithm is {integrity.get('algorithm')!r}, expected {ALGORITHM!r}")
    expected_id = _key_id(public_key)
    if integrity.get("key_id") != expected_id:
        problems.append(
            f"key_id {integrity.get('key_id')!r} does not match the public key ({expected_id})"
        )
    if payload is None:
        return problems
    sig_text = integrity.get("signature")
    try:
        if not isinstance(sig_text, str):
            raise ValueError("not a string")
        signature = base64.b64decode(sig_text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        problems.append("signature is not valid base64")
        return problems
    # A decoder ignores the unused low bits of the last base64 digit, so two spellings can carry
    # one signature: only the canonical one is accepted, or an edit to the file could go unseen.
    if base64.b64encode(signature).decode("ascii") != sig_text:
        problems.append("signature is not in canonical base64")
        return problems
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        problems.append("signature does not verify with the given public key")
    return problems


def verify_envelope(envelope: dict, public_pem: str) -> list[str]:
    """Check one envelope against a PEM public key; returns the problems (empty when valid).

    Checks the schema string, the algorithm, the key id, the recomputed sha256 and the Ed25519
    signature over the canonical bytes of ``{"report", "previous_sha256", "sequence"}``. Fields
    outside the signed content other than the documented ones are reported as problems too.
    """
    payload, problems = _recompute(envelope)
    integ = envelope.get("integrity") if isinstance(envelope, dict) else None
    if isinstance(integ, dict):
        return problems + verify_signed(payload, integ, public_pem)
    try:
        _load_public_pem(public_pem)
    except (ValueError, TypeError) as exc:
        problems.append(f"public key is unusable: {exc}")
    return problems


def verify_chain(envelopes: Sequence[Any], *, partial: bool = False) -> list[str]:
    """Check the hash chain of envelopes given oldest first; returns the problems.

    Each envelope's sha256 must match its content, each ``previous_sha256`` must equal the
    ``sha256`` of the envelope before it, and numbered reports must count up by one. The run
    must begin at the chain's genesis report (no ``previous_sha256``; sequence 1 when numbered),
    so a dropped first report is seen; with ``partial`` it may be a stretch from the middle of
    the chain (a page of ``GET /v1/audit-chain``). Whether reports are missing at the end shows
    only against a signed head (:mod:`app.audit.head`). Signatures are not checked here; use
    :func:`verify_envelope` on each envelope for that.
    """
    problems: list[str] = []
    prev_hash: str | None = None
    prev_seq: int | None = None
    numbered = False
    for i, envelope in enumerate(envelopes):
        _, own = _recompute(envelope)
        problems.extend(f"report #{i}: {p}" for p in own)
        integ = envelope.get("integrity") if isinstance(envelope, dict) else None
        if not isinstance(integ, dict):
            prev_hash, prev_seq = None, None
            continue
        link = integ.get("previous_sha256")
        if i > 0 and (prev_hash is None or link != prev_hash):
            problems.append(
                f"report #{i}: previous_sha256 {link!r} does not equal the sha256 of "
                f"report #{i - 1} ({prev_hash!r}); the chain is broken or out of order"
            )
        if i == 0 and not partial and link is not None:
            problems.append(
                "report #0: it links to an earlier report (previous_sha256 is not null): the "
                "chain does not start at its genesis report, so its first report(s) are missing"
            )
        seq = integ.get("sequence") if is_sequence_number(integ.get("sequence")) else None
        if seq is None and numbered:
            problems.append(f"report #{i}: no sequence number after numbered reports")
        elif seq is not None:
            expected = prev_seq + 1 if prev_seq is not None else None
            if expected is None and not partial and not numbered:
                expected = i + 1  # the reports before it are the chain's first ones
            if expected is not None and seq != expected:
                problems.append(
                    f"report #{i}: sequence {seq}, expected {expected}: reports are missing "
                    "or out of order"
                )
            if (seq == 1) != (link is None):
                problems.append(
                    f"report #{i}: sequence {seq} with previous_sha256 {link!r}: only the "
                    "genesis report (sequence 1) has no previous report"
                )
            numbered = True
        claimed = integ.get("sha256")
        prev_hash = claimed if isinstance(claimed, str) else None
        prev_seq = seq
    return problems
