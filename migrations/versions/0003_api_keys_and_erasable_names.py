"""API keys with roles, request owners, hashed idempotency keys, erasable sample names

Revision ID: 0003_api_keys_and_erasable_names
Revises: 0002
Create Date: 2026-12-01 10:00:00
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003_api_keys_and_erasable_names"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_sha256"),
    )
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_key_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_deletion_requests_owner_key", "api_keys", ["owner_key_id"], ["id"]
        )
        batch_op.create_index(
            batch_op.f("ix_deletion_requests_owner_key_id"), ["owner_key_id"], unique=False
        )
    # Erased samples keep their hash, class and split but lose their names (NULL never
    # collides in the (dataset_id, rel_path) unique constraint).
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.alter_column("rel_path", existing_type=sa.String(length=1000), nullable=True)
        batch_op.alter_column("file_name", existing_type=sa.String(length=255), nullable=True)
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "UPDATE samples SET rel_path = NULL, file_name = NULL WHERE state = 'deleted'"
        )
    )
    # Idempotency keys are stored as hashes from now on (callers often use ticket ids).
    requests = sa.table(
        "deletion_requests", sa.column("id", sa.String), sa.column("idempotency_key", sa.String)
    )
    rows = bind.execute(
        sa.select(requests.c.id, requests.c.idempotency_key).where(
            requests.c.idempotency_key.is_not(None)
        )
    ).all()
    for request_id, key in rows:
        digest = hashlib.sha256(f"unowned:{key}".encode()).hexdigest()
        bind.execute(
            requests.update().where(requests.c.id == request_id).values(idempotency_key=digest)
        )


def downgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.alter_column("file_name", existing_type=sa.String(length=255), nullable=False)
        batch_op.alter_column("rel_path", existing_type=sa.String(length=1000), nullable=False)
    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deletion_requests_owner_key_id"))
        batch_op.drop_constraint("fk_deletion_requests_owner_key", type_="foreignkey")
        batch_op.drop_column("owner_key_id")
    op.drop_table("api_keys")
