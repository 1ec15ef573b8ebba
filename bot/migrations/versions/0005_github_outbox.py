"""github outbox: GitHub side effects written with the state change that causes them, and what Sami
remembers of each pull request's conversation (sticky comment id, fork approval, last command)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATES = ("pending", "delivering", "delivered", "skipped", "failed")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("coalesce_key", sa.String(length=255), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("pull_request", sa.Integer(), nullable=True),
        sa.Column("deployment_id", sa.BigInteger(), nullable=True),
        sa.Column("action_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(sa.column("state").in_(STATES), name=op.f("ck_outbox_outboxstate")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("key", name=op.f("uq_outbox_key")),
    )
    op.create_index(op.f("ix_outbox_state_due_at"), "outbox", ["state", "due_at"])
    op.create_index(op.f("ix_outbox_repository_pull_request"), "outbox", ["repository", "pull_request"])
    op.create_index(op.f("ix_outbox_action_id"), "outbox", ["action_id"])
    op.create_index("uq_outbox_pending_coalesce_key", "outbox", ["coalesce_key"], unique=True,
                    postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))
    op.create_table(
        "github_pull_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("head_sha", sa.String(length=64), nullable=True),
        sa.Column("fork", sa.Boolean(), nullable=False),
        sa.Column("approved_sha", sa.String(length=64), nullable=True),
        sa.Column("approved_by", sa.String(length=255), nullable=True),
        sa.Column("comment_id", sa.BigInteger(), nullable=True),
        sa.Column("comment_digest", sa.String(length=64), nullable=True),
        sa.Column("last_command", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_github_pull_requests")),
        sa.UniqueConstraint("repository", "number", name=op.f("uq_github_pull_requests_repository_number")),
    )


def downgrade() -> None:
    op.drop_table("github_pull_requests")
    op.drop_index("uq_outbox_pending_coalesce_key", table_name="outbox")
    op.drop_index(op.f("ix_outbox_action_id"), table_name="outbox")
    op.drop_index(op.f("ix_outbox_repository_pull_request"), table_name="outbox")
    op.drop_index(op.f("ix_outbox_state_due_at"), table_name="outbox")
    op.drop_table("outbox")
