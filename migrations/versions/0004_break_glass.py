"""Break-glass access: grants, their tagged accesses and the privacy officer's review.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 09:00:00

"""
from alembic import op
import sqlalchemy as sa

import app.models.types

# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def upgrade_():
    op.create_table('break_glass_grant',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('patient_id', sa.String(length=36), nullable=False),
    sa.Column('clinic_id', sa.String(length=36), nullable=False),
    sa.Column('organization_id', sa.String(length=36), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('started_at', app.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', app.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('review_due_at', app.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reviewed_by', sa.String(length=36), nullable=True),
    sa.Column('reviewed_at', app.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('disposition', sa.String(length=20), nullable=True),
    sa.Column('review_note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['clinic_id'], ['clinic.id'], name=op.f('fk_break_glass_grant_clinic_id_clinic')),
    sa.ForeignKeyConstraint(['organization_id'], ['organization.id'], name=op.f('fk_break_glass_grant_organization_id_organization')),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_break_glass_grant_patient_id_patient')),
    sa.ForeignKeyConstraint(['reviewed_by'], ['user.id'], name=op.f('fk_break_glass_grant_reviewed_by_user')),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_break_glass_grant_user_id_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_break_glass_grant'))
    )
    with op.batch_alter_table('break_glass_grant', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_break_glass_grant_organization_id'), ['organization_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_break_glass_grant_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index('ix_break_glass_grant_user_expires', ['user_id', 'expires_at'], unique=False)


def downgrade_():
    with op.batch_alter_table('break_glass_grant', schema=None) as batch_op:
        batch_op.drop_index('ix_break_glass_grant_user_expires')
        batch_op.drop_index(batch_op.f('ix_break_glass_grant_patient_id'))
        batch_op.drop_index(batch_op.f('ix_break_glass_grant_organization_id'))

    op.drop_table('break_glass_grant')


def upgrade_audit():
    # An index only: the table's rows and its append-only triggers are left as they are.
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_event_break_glass_id'), ['break_glass_id'], unique=False)


def downgrade_audit():
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_event_break_glass_id'))
