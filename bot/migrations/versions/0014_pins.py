"""rollback pins: who pinned a deployment (a rollback of it, or of its environment from a snapshot), when,
by which action and why; while set, CI requests and pushes to the deployments repo do not change it

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("pinned_by", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pinned_action_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                                   nullable=True))
        batch.add_column(sa.Column("pin_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("pin_reason")
        batch.drop_column("pinned_action_id")
        batch.drop_column("pinned_at")
        batch.drop_column("pinned_by")
