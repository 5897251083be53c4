"""request options (guard rails and targets) and the audit chain's sequence numbers

Revision ID: 0004
Revises: 0003_api_keys_and_erasable_names
Create Date: 2026-12-05 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003_api_keys_and_erasable_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.add_column(sa.Column("options", sa.JSON(), nullable=True))
    with op.batch_alter_table("audit_reports") as batch:
        batch.add_column(sa.Column("sequence", sa.Integer(), nullable=True))
    # Existing reports are numbered in chain order (their id order), starting at 1.
    bind = op.get_bind()
    reports = sa.table(
        "audit_reports", sa.column("id", sa.Integer), sa.column("sequence", sa.Integer)
    )
    ids = bind.execute(sa.select(reports.c.id).order_by(reports.c.id)).scalars().all()
    for position, report_id in enumerate(ids, start=1):
        bind.execute(reports.update().where(reports.c.id == report_id).values(sequence=position))
    with op.batch_alter_table("audit_reports") as batch:
        batch.create_unique_constraint("uq_audit_reports_sequence", ["sequence"])


def downgrade() -> None:
    with op.batch_alter_table("audit_reports") as batch:
        batch.drop_constraint("uq_audit_reports_sequence", type_="unique")
        batch.drop_column("sequence")
    with op.batch_alter_table("deletion_requests") as batch:
        batch.drop_column("options")
