"""The change log's txid is filled in by the database: the writing transaction's id on
PostgreSQL, 0 on SQLite.

A write no longer asks PostgreSQL for its transaction id before appending to the log: one
round trip less for every writing transaction.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 15:00:00

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def upgrade_():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE change_log ALTER COLUMN txid "
                   "SET DEFAULT (pg_current_xact_id()::text::bigint)")
        return
    with op.batch_alter_table('change_log', schema=None) as batch_op:
        batch_op.alter_column('txid', existing_type=sa.BigInteger(), existing_nullable=False,
                              server_default=sa.text('0'))


def downgrade_():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE change_log ALTER COLUMN txid DROP DEFAULT")
        return
    with op.batch_alter_table('change_log', schema=None) as batch_op:
        batch_op.alter_column('txid', existing_type=sa.BigInteger(), existing_nullable=False,
                              server_default=None)


def upgrade_audit():
    pass


def downgrade_audit():
    pass
