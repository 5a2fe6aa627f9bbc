"""Sync clients: per-device order and subsets, the server epoch, and pull positions in the change log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 16:34:39.665666

"""
import uuid

from alembic import op
import sqlalchemy as sa

import app.models.types
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()

def upgrade_():
    op.create_table('server_epoch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.String(length=36), nullable=False),
    sa.Column('created_at', app.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_server_epoch'))
    )
    op.create_table('sync_client',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('clinic_id', sa.String(length=36), nullable=True),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('created_at', app.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', app.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_push_at', app.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_pull_at', app.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('telemetry', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('telemetry_at', app.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('user_agent', sa.String(length=300), nullable=True),
    sa.ForeignKeyConstraint(['clinic_id'], ['clinic.id'], name=op.f('fk_sync_client_clinic_id_clinic')),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_sync_client_user_id_user')),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_sync_client'))
    )
    with op.batch_alter_table('sync_client', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_client_clinic_id'), ['clinic_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sync_client_user_id'), ['user_id'], unique=False)

    op.create_table('sync_subset',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=36), nullable=False),
    sa.Column('added_gen', sa.Integer(), nullable=False),
    sa.Column('removed_gen', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['sync_client.client_id'], name=op.f('fk_sync_subset_client_id_sync_client'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_id', 'patient_id', 'added_gen', name=op.f('pk_sync_subset'))
    )
    with op.batch_alter_table('sync_subset', schema=None) as batch_op:
        batch_op.create_index('ix_sync_subset_client_removed', ['client_id', 'removed_gen'], unique=False)

    # SQLite commits in seq order, so every row there shares position txid 0.
    op.execute("UPDATE change_log SET txid = 0 WHERE txid IS NULL")
    with op.batch_alter_table('change_log', schema=None) as batch_op:
        batch_op.alter_column('txid',
               existing_type=sa.BIGINT(),
               nullable=False)
        batch_op.create_index('ix_change_log_origin_client_id', ['origin_client_id'], unique=False)
        batch_op.create_index('ix_change_log_position', ['txid', 'seq'], unique=False)

    epoch = sa.table('server_epoch', sa.column('id', sa.Integer), sa.column('epoch', sa.String),
                     sa.column('created_at', app.models.types.UTCDateTime(timezone=True)),
                     sa.column('reason', sa.String))
    op.bulk_insert(epoch, [{'id': 1, 'epoch': str(uuid.uuid4()),
                            'created_at': app.models.types.utcnow(), 'reason': 'created'}])


def downgrade_():
    with op.batch_alter_table('change_log', schema=None) as batch_op:
        batch_op.drop_index('ix_change_log_position')
        batch_op.drop_index('ix_change_log_origin_client_id')
        batch_op.alter_column('txid',
               existing_type=sa.BIGINT(),
               nullable=True)

    with op.batch_alter_table('sync_subset', schema=None) as batch_op:
        batch_op.drop_index('ix_sync_subset_client_removed')

    op.drop_table('sync_subset')
    with op.batch_alter_table('sync_client', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sync_client_user_id'))
        batch_op.drop_index(batch_op.f('ix_sync_client_clinic_id'))

    op.drop_table('sync_client')
    op.drop_table('server_epoch')


def upgrade_audit():
    pass


def downgrade_audit():
    pass

