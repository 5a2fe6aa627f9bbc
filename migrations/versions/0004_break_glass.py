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
    pass


def downgrade_():
    pass


def upgrade_audit():
    pass


def downgrade_audit():
    pass
