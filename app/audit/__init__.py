"""Audit reports: the v1 report schema and its integrity (canonical JSON, Ed25519, hash chain).

Imported by the HTTP API and the CLI, so it imports neither torch nor numpy. The parts that
compute the report's content (membership inference, plots, HTML) live in ``worker.audit``.
"""

from app.audit.integrity import (
    ALGORITHM,
    SigningKey,
    canonical_json,
    key_id_from_public_pem,
    payload_bytes,
    seal_report,
    sha256_hex,
    verify_chain,
    verify_envelope,
)
from app.audit.schema import REPORT_SCHEMA_VERSION, ReportBody, report_json_schema

__all__ = [
    "ALGORITHM",
    "REPORT_SCHEMA_VERSION",
    "ReportBody",
    "SigningKey",
    "canonical_json",
    "key_id_from_public_pem",
    "payload_bytes",
    "report_json_schema",
    "seal_report",
    "sha256_hex",
    "verify_chain",
    "verify_envelope",
]
