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
    pass


def downgrade_():
    pass


def upgrade_audit():
    pass


def downgrade_audit():
    pass
