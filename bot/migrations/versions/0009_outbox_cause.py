"""outbox cause: each GitHub side effect names the webhook delivery that caused it (its action
already names the action), so one delivery can be followed to its last GitHub call

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivery_id", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_outbox_delivery_id", ["delivery_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_delivery_id")
        batch_op.drop_column("delivery_id")
