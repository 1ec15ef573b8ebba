"""actions.enqueued_at goes: nothing read it (the sweep asks the queue whether an action's job is
there), and writing it cost every accepted request a second transaction; its index goes with it

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.drop_index("ix_actions_state_enqueued_at")
        batch.drop_column("enqueued_at")


def downgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_actions_state_enqueued_at", ["state", "enqueued_at"], unique=False)
