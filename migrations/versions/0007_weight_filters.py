"""weight filters: per-class filter jobs of a model

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-05 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "weight_filters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("trained_on_version_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=True),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("accuracy", sa.JSON(), nullable=False),
        sa.Column("shards", sa.JSON(), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=False),
        sa.Column("worker_token", sa.String(length=36), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["trained_on_version_id"], ["model_versions.id"]),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_weight_filters_model", "weight_filters", ["model_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_weight_filters_model", table_name="weight_filters")
    op.drop_table("weight_filters")
