"""blue-green releases: each release into an environment's idle colour and each switch of its entry
(release or rollback), with who asked, when, which snapshot, and from which colour to which

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", BigId, nullable=False),
        sa.Column("environment", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("from_colour", sa.String(length=8), nullable=True),
        sa.Column("to_colour", sa.String(length=8), nullable=False),
        sa.Column("snapshot_id", BigId, nullable=True),
        sa.Column("run_id", BigId, nullable=True),
        sa.Column("archive_run_id", BigId, nullable=True),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("origin", sa.String(length=32), nullable=False),
        sa.Column("switched_by", sa.String(length=255), nullable=True),
        sa.Column("source_repo", sa.String(length=255), nullable=True),
        sa.Column("pull_request", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["snapshot_id"], ["environment_snapshots.id"],
                                name=op.f("fk_releases_snapshot_id_environment_snapshots"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["run_id"], ["environment_runs.id"],
                                name=op.f("fk_releases_run_id_environment_runs"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["archive_run_id"], ["environment_runs.id"],
                                name=op.f("fk_releases_archive_run_id_environment_runs"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_releases")),
    )
    op.create_index(op.f("ix_releases_environment_id"), "releases", ["environment", "id"])
    op.create_index(op.f("ix_releases_state"), "releases", ["state"])


def downgrade() -> None:
    op.drop_table("releases")
