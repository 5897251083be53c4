"""linked deletion requests across the models of a dataset; one open external_id per model

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-05 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The open request states (app.db.models.OPEN_REQUEST_STATES), as they stood at this revision.
OPEN_EXTERNAL_ID = (
    "external_id IS NOT NULL AND status IN "
    "('pending_approval', 'received', 'queued', 'running', 'verifying')"
)


def upgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.add_column(sa.Column("linked_to", sa.String(length=36), nullable=True))
        batch.create_foreign_key(
            "fk_deletion_requests_linked_to",
            "deletion_requests",
            ["linked_to"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index("ix_deletion_requests_linked_to", ["linked_to"])
    op.create_index(
        "uq_requests_open_external_id",
        "deletion_requests",
        ["model_id", "external_id"],
        unique=True,
        sqlite_where=sa.text(OPEN_EXTERNAL_ID),
        postgresql_where=sa.text(OPEN_EXTERNAL_ID),
    )


def downgrade() -> None:
    op.drop_index("uq_requests_open_external_id", table_name="deletion_requests")
    with op.batch_alter_table("deletion_requests") as batch:
        batch.drop_index("ix_deletion_requests_linked_to")
        batch.drop_constraint("fk_deletion_requests_linked_to", type_="foreignkey")
        batch.drop_column("linked_to")
