"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_id', sa.String(length=32), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_api_tokens_name')),
    sa.UniqueConstraint('token_id', name=op.f('uq_api_tokens_token_id'))
    )
    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('delivery_id', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=True),
    sa.Column('repository', sa.String(length=255), nullable=True),
    sa.Column('outcome', sa.String(length=255), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('delivery_id', name=op.f('uq_deliveries_delivery_id'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deliveries_received_at'), ['received_at'], unique=False)

    op.create_table('deployments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('service', sa.String(length=63), nullable=False),
    sa.Column('environment', sa.String(length=63), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('state', sa.Enum('CreatePending', 'UpdatePending', 'ArchivePending', 'CleanupPending', 'Running', 'Failure', 'Archived', 'CleanupFailed', 'Removed', name='deploymentstate', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('failure_reason', sa.Enum('partial_availability', 'tag_mismatch', 'timed_out', 'generic', name='failurereason', native_enum=False, create_constraint=True, length=32), nullable=True),
    sa.Column('status_message', sa.Text(), nullable=True),
    sa.Column('tag', sa.String(length=255), nullable=True),
    sa.Column('image', sa.String(length=512), nullable=True),
    sa.Column('app_overrides', sa.JSON(), nullable=False),
    sa.Column('deployment_overrides', sa.JSON(), nullable=False),
    sa.Column('links', sa.JSON(), nullable=False),
    sa.Column('source_repo', sa.String(length=255), nullable=True),
    sa.Column('pull_request', sa.Integer(), nullable=True),
    sa.Column('ref', sa.String(length=255), nullable=True),
    sa.Column('sha', sa.String(length=64), nullable=True),
    sa.Column('manifest_sha', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deployments')),
    sa.UniqueConstraint('name', name=op.f('uq_deployments_name'))
    )
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployments_checked_at'), ['checked_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployments_service_environment'), ['service', 'environment'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployments_source_repo_pull_request'), ['source_repo', 'pull_request'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployments_state'), ['state'], unique=False)

    op.create_table('actions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('deployment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('state', sa.Enum('queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'superseded', name='actionstate', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('requested_by', sa.String(length=255), nullable=False),
    sa.Column('origin', sa.String(length=32), nullable=False),
    sa.Column('delivery_id', sa.String(length=64), nullable=True),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('log', sa.Text(), nullable=False),
    sa.Column('log_truncated', sa.Boolean(), nullable=False),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('script_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], name=op.f('fk_actions_deployment_id_deployments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_actions'))
    )
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_actions_delivery_id'), ['delivery_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_actions_deployment_id_created_at'), ['deployment_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_actions_state_enqueued_at'), ['state', 'enqueued_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_actions_state_heartbeat_at'), ['state', 'heartbeat_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_actions_state_heartbeat_at'))
        batch_op.drop_index(batch_op.f('ix_actions_state_enqueued_at'))
        batch_op.drop_index(batch_op.f('ix_actions_deployment_id_created_at'))
        batch_op.drop_index(batch_op.f('ix_actions_delivery_id'))

    op.drop_table('actions')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployments_state'))
        batch_op.drop_index(batch_op.f('ix_deployments_source_repo_pull_request'))
        batch_op.drop_index(batch_op.f('ix_deployments_service_environment'))
        batch_op.drop_index(batch_op.f('ix_deployments_checked_at'))

    op.drop_table('deployments')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_received_at'))

    op.drop_table('deliveries')
    op.drop_table('api_tokens')
