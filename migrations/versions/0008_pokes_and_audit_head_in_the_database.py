"""PostgreSQL announces the clinics a transaction changed, and hands the audit chain's head
to whoever holds its lock, each without a statement of the app's own.

- A statement trigger on change_log NOTIFYs each clinic its new rows name (DESIGN.md §5,
  pokes). A write no longer sends pg_notify itself: one round trip less per writing
  transaction, and no writer can forget it. As before, a rolled-back savepoint or
  transaction takes its notifications with it, and PostgreSQL delivers one per clinic per
  transaction at commit.
- audit_chain_head() takes the chain's lock and then reads its newest row, in one call. A
  plain SELECT beside the lock would read with a snapshot taken before the lock was granted,
  and miss a row committed while it waited; a PL/pgSQL statement takes a fresh one.

SQLite has neither: its listeners watch the change log, and one writer at a time holds the
whole database.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 17:45:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# The same values as app/services/pokes.py CHANNEL and app/services/audit.py _PG_LOCK_KEY; a
# migration keeps its own copy, as it must go on doing what it did when it was written.
_CHANNEL = "clinic_changes"
_AUDIT_LOCK_KEY = 0x41554454


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade_():
    if not _postgresql():
        return
    op.execute(f"""
        CREATE FUNCTION change_log_poke() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{_CHANNEL}', clinic_id)
               FROM (SELECT DISTINCT clinic_id FROM new_rows
                      WHERE clinic_id IS NOT NULL) AS changed;
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER change_log_poke AFTER INSERT ON change_log
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION change_log_poke()""")


def downgrade_():
    if not _postgresql():
        return
    op.execute("DROP TRIGGER change_log_poke ON change_log")
    op.execute("DROP FUNCTION change_log_poke()")


def upgrade_audit():
    if not _postgresql():
        return
    op.execute(f"""
        CREATE FUNCTION audit_chain_head(OUT id bigint, OUT hash varchar)
        RETURNS SETOF record LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({_AUDIT_LOCK_KEY});
            RETURN QUERY SELECT e.id::bigint, e.hash::varchar FROM audit_event AS e
                         ORDER BY e.id DESC LIMIT 1;
        END $$""")


def downgrade_audit():
    if not _postgresql():
        return
    op.execute("DROP FUNCTION audit_chain_head()")
