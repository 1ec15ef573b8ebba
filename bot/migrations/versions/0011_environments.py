"""environments as products: whole-environment runs and their components, snapshots (templates) of an
environment, the environments Sami made itself (clones), and each deployment's recorded outputs (its
endpoint) and the environment whose manifests it is deployed with

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("outputs", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("manifest_environment", sa.String(length=63), nullable=True))
    op.create_table(
        "environments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("template", sa.String(length=63), nullable=False),
        sa.Column("clone_of", sa.String(length=63), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
        sa.UniqueConstraint("name", name=op.f("uq_environments_name")),
    )
    op.create_table(
        "environment_snapshots",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("environment", sa.String(length=63), nullable=False),
        sa.Column("manifest_sha", sa.String(length=64), nullable=True),
        sa.Column("components", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environment_snapshots")),
        sa.UniqueConstraint("name", name=op.f("uq_environment_snapshots_name")),
    )
    op.create_index(op.f("ix_environment_snapshots_environment"), "environment_snapshots", ["environment"])
    op.create_table(
        "environment_runs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("environment", sa.String(length=63), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("origin", sa.String(length=32), nullable=False),
        sa.Column("snapshot_id", BigId, nullable=True),
        sa.Column("manifest_sha", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["snapshot_id"], ["environment_snapshots.id"],
                                name=op.f("fk_environment_runs_snapshot_id_environment_snapshots"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environment_runs")),
    )
    op.create_index(op.f("ix_environment_runs_environment_created_at"), "environment_runs",
                    ["environment", "created_at"])
    op.create_index(op.f("ix_environment_runs_state"), "environment_runs", ["state"])
    op.create_table(
        "environment_run_components",
        sa.Column("id", BigId, nullable=False),
        sa.Column("run_id", BigId, nullable=False),
        sa.Column("service", sa.String(length=63), nullable=False),
        sa.Column("deployment", sa.String(length=63), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("after", sa.JSON(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("action_id", BigId, nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["environment_runs.id"],
                                name=op.f("fk_environment_run_components_run_id_environment_runs"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["action_id"], ["actions.id"],
                                name=op.f("fk_environment_run_components_action_id_actions"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environment_run_components")),
        sa.UniqueConstraint("run_id", "service", name=op.f("uq_environment_run_components_run_id_service")),
    )
    op.create_index(op.f("ix_environment_run_components_action_id"), "environment_run_components", ["action_id"])


def downgrade() -> None:
    op.drop_table("environment_run_components")
    op.drop_table("environment_runs")
    op.drop_table("environment_snapshots")
    op.drop_table("environments")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("manifest_environment")
        batch.drop_column("outputs")
