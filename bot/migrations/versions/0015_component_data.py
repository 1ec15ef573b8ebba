"""environment run components: what an internal third-party service of a clone or a preview holds
(empty, seeded, or why its seed failed), and what an external one is (shared); the pull request a
preview environment belongs to (its sticky comment lists the preview's components)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("environment_run_components") as batch:
        batch.add_column(sa.Column("data", sa.String(1000), nullable=True))
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("pull_request_repository", sa.String(140), nullable=True))
        batch.add_column(sa.Column("pull_request_number", sa.Integer(), nullable=True))
        batch.create_index("ix_environments_pull_request", ["pull_request_repository", "pull_request_number"])


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_index("ix_environments_pull_request")
        batch.drop_column("pull_request_number")
        batch.drop_column("pull_request_repository")
    with op.batch_alter_table("environment_run_components") as batch:
        batch.drop_column("data")
