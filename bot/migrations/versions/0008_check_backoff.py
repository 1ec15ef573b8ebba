"""check backoff: a periodic check that cannot start (a secret missing, the manifest gone) is tried
again on the check interval, doubling, instead of on every scheduler tick

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("check_failures", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("check_retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("check_retry_at")
        batch_op.drop_column("check_failures")
