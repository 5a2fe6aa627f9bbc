"""Audit event and checkpoint ids as 64-bit integers on PostgreSQL.

Every sync request appends events (a pull one per patient it sends), so a fleet reaches
2,147,483,647 events, the end of a 32-bit integer, in years rather than decades; the table
is cheaper to widen now than when it is large. SQLite's INTEGER is 64 bits already.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 21:30:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_COLUMNS = (("audit_event", "id"), ("audit_checkpoint", "id"), ("audit_checkpoint", "event_id"))


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def upgrade_():
    pass


def downgrade_():
    pass


def upgrade_audit():
    _retype("bigint")


def downgrade_audit():
    _retype("integer")


def _retype(sql_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {sql_type}")
