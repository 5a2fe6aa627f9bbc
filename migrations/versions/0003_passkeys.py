"""Passkeys: WebAuthn credentials per user.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 09:00:00

"""
from alembic import op
import sqlalchemy as sa

import app.models.types

# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def upgrade_():
    op.create_table('passkey_credential',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('credential_id', sa.String(length=1400), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('sign_count', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('aaguid', sa.String(length=36), nullable=True),
    sa.Column('backed_up', sa.Boolean(), nullable=False),
    sa.Column('created_at', app.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', app.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_passkey_credential_user_id_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_passkey_credential')),
    sa.UniqueConstraint('credential_id', name=op.f('uq_passkey_credential_credential_id'))
    )
    with op.batch_alter_table('passkey_credential', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_passkey_credential_user_id'), ['user_id'], unique=False)

    op.create_table('webauthn_challenge',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=20), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=True),
    sa.Column('expires_at', app.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_webauthn_challenge_user_id_user'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webauthn_challenge'))
    )
    with op.batch_alter_table('webauthn_challenge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webauthn_challenge_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_webauthn_challenge_user_id'), ['user_id'], unique=False)


def downgrade_():
    with op.batch_alter_table('webauthn_challenge', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webauthn_challenge_user_id'))
        batch_op.drop_index(batch_op.f('ix_webauthn_challenge_expires_at'))

    op.drop_table('webauthn_challenge')
    with op.batch_alter_table('passkey_credential', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_passkey_credential_user_id'))

    op.drop_table('passkey_credential')


def upgrade_audit():
    pass


def downgrade_audit():
    pass
