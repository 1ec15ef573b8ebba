"""action cancel: when a cancel of a running action was asked for and by whom, and the failure
reason "cancelled"

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OLD_REASONS = ("partial_availability", "tag_mismatch", "timed_out", "generic")
NEW_REASONS = (*OLD_REASONS, "cancelled")


def _reasons(values) -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_deployments_failurereason"), type_="check")
        batch_op.create_check_constraint(op.f("ck_deployments_failurereason"),
                                         sa.column("failure_reason").in_(values))


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("cancel_requested_by", sa.String(length=255), nullable=True))
    _reasons(NEW_REASONS)


def downgrade() -> None:
    op.execute("UPDATE deployments SET failure_reason = 'generic' WHERE failure_reason = 'cancelled'")
    _reasons(OLD_REASONS)
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested_by")
        batch_op.drop_column("cancel_requested_at")
