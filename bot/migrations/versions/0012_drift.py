"""deployed vs running: what the target reported running when an action's check passed (the
baseline of what Sami deployed), the latest report of the periodic check, and the drift between them

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("running", sa.JSON(), nullable=True))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("running", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("running_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("drift", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("drift_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("drift_since")
        batch.drop_column("drift")
        batch.drop_column("running_at")
        batch.drop_column("running")
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("running")
