"""Each patient's records indexed by (patient_id, id), the order a backfill walks them in.

The (patient_id, id) index replaces the one on patient_id alone, which it also serves.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 04:30:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

TABLES = ('patient_identifier', 'visit', 'observation', 'condition', 'note', 'note_addendum',
          'medication_request', 'medication_dispense', 'appointment', 'consent')


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def upgrade_():
    for table in TABLES:
        op.create_index(f'ix_{table}_patient_id_id', table, ['patient_id', 'id'], unique=False)
        op.drop_index(f'ix_{table}_patient_id', table_name=table)


def downgrade_():
    for table in TABLES:
        op.create_index(f'ix_{table}_patient_id', table, ['patient_id'], unique=False)
        op.drop_index(f'ix_{table}_patient_id_id', table_name=table)


def upgrade_audit():
    pass


def downgrade_audit():
    pass
