"""Field-level encryption of sensitive columns, and signed audit checkpoints.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 09:00:00

"""
from contextlib import nullcontext

from alembic import op
import sqlalchemy as sa

import app.models.types
from app.models import audit_ddl

# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def _reseal(mode):
    # Existing plaintext is sealed (and sealed values opened again on the way down) with the
    # configured keys, inside the migration's transaction.
    from app.models.sealed import current_cipher
    from app.services.key_rotation import reseal
    bind = op.get_bind()
    tallies = reseal(current_cipher(), lambda: nullcontext(bind), mode=mode)
    failures = [f for t in tallies for f in t.failures]
    if failures:
        raise RuntimeError(f"{len(failures)} values could not be converted, first: {failures[0]}")


def upgrade_():
    with op.batch_alter_table('patient_identifier', schema=None) as batch_op:
        batch_op.add_column(sa.Column('value_index', sa.String(length=64), nullable=True))
        batch_op.alter_column('value', existing_type=sa.String(length=100),
                              type_=sa.String(length=640), existing_nullable=False)
        batch_op.drop_index(batch_op.f('ix_patient_identifier_value'))
        batch_op.create_index(batch_op.f('ix_patient_identifier_value_index'), ['value_index'],
                              unique=False)
    with op.batch_alter_table('condition', schema=None) as batch_op:
        batch_op.alter_column('code', existing_type=sa.String(length=20),
                              type_=sa.String(length=200), existing_nullable=True)
        batch_op.alter_column('text', existing_type=sa.String(length=300), type_=sa.Text(),
                              existing_nullable=False)
    _reseal("seal-plaintext")


def downgrade_():
    _reseal("unseal")
    with op.batch_alter_table('condition', schema=None) as batch_op:
        batch_op.alter_column('text', existing_type=sa.Text(), type_=sa.String(length=300),
                              existing_nullable=False)
        batch_op.alter_column('code', existing_type=sa.String(length=200),
                              type_=sa.String(length=20), existing_nullable=True)
    with op.batch_alter_table('patient_identifier', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patient_identifier_value_index'))
        batch_op.create_index(batch_op.f('ix_patient_identifier_value'), ['value'], unique=False)
        batch_op.alter_column('value', existing_type=sa.String(length=640),
                              type_=sa.String(length=100), existing_nullable=False)
        batch_op.drop_column('value_index')


def upgrade_audit():
    op.create_table('audit_checkpoint',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('event_hash', sa.String(length=64), nullable=False),
    sa.Column('at', app.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('signature', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoint'))
    )
    for statement in audit_ddl.create_statements(op.get_bind().dialect.name, "audit_checkpoint"):
        op.execute(statement)


def downgrade_audit():
    for statement in audit_ddl.drop_statements(op.get_bind().dialect.name, "audit_checkpoint"):
        op.execute(statement)
    op.drop_table('audit_checkpoint')
