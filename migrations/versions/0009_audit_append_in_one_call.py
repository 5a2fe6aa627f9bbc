"""PostgreSQL appends to the audit chain in one call: audit_append() takes the chain's lock,
reads its head, numbers and hashes the new rows and inserts them.

The app sends each row's canonical JSON (the text its hash covers) in two pieces, before and
after its id, since the id is known only once the chain is held; the hash is the one the app
computes (app/services/audit.py chain_hash), so `flask audit verify` is unchanged. One
statement in its own transaction, where the app's append took four round trips (BEGIN, the
head, the INSERT, COMMIT).

SQLite has no such function: one writer at a time holds the whole database, and the app
appends there as before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 20:50:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# The same value as app/services/audit.py's lock key; a migration keeps its own copy, as it
# must go on doing what it did when it was written.
_AUDIT_LOCK_KEY = 0x41554454
_GENESIS_HASH = "0" * 64


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade_():
    pass


def downgrade_():
    pass


def upgrade_audit():
    if not _postgresql():
        return
    # The head is read after the lock is granted, by a statement of its own (a fresh snapshot
    # in READ COMMITTED): read beside the lock, it could miss the row committed while this
    # call waited (as audit_chain_head() in 0008).
    op.execute(f"""
        CREATE FUNCTION audit_append(before_id text[], after_id text[], rows jsonb,
                                     OUT first_id bigint, OUT last_id bigint,
                                     OUT last_hash varchar)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            prev varchar;
            prevs varchar[] := '{{}}';
            hashes varchar[] := '{{}}';
        BEGIN
            PERFORM pg_advisory_xact_lock({_AUDIT_LOCK_KEY});
            SELECT e.id, e.hash INTO last_id, prev FROM audit_event AS e
             ORDER BY e.id DESC LIMIT 1;
            IF NOT FOUND THEN
                last_id := 0;
                prev := '{_GENESIS_HASH}';
            END IF;
            first_id := last_id + 1;
            FOR n IN 1 .. coalesce(array_length(before_id, 1), 0) LOOP
                prevs := prevs || prev;
                prev := encode(sha256(convert_to(
                    prev || before_id[n] || (first_id + n - 1)::text || after_id[n], 'UTF8')),
                    'hex');
                hashes := hashes || prev;
            END LOOP;
            INSERT INTO audit_event (id, at, user_id, username, role, clinic_id, patient_id,
                                     action, outcome, device, break_glass_id, request_id,
                                     detail, prev_hash, hash)
            SELECT first_id + e.n - 1, (e.row ->> 'at')::timestamptz, e.row ->> 'user_id',
                   e.row ->> 'username', e.row ->> 'role', e.row ->> 'clinic_id',
                   e.row ->> 'patient_id', e.row ->> 'action', e.row ->> 'outcome',
                   e.row ->> 'device', e.row ->> 'break_glass_id', e.row ->> 'request_id',
                   e.row -> 'detail', prevs[e.n], hashes[e.n]
              FROM jsonb_array_elements(rows) WITH ORDINALITY AS e(row, n)
             ORDER BY e.n;
            last_id := first_id + coalesce(array_length(before_id, 1), 0) - 1;
            last_hash := prev;
        END $$""")


def downgrade_audit():
    if not _postgresql():
        return
    op.execute("DROP FUNCTION audit_append(text[], text[], jsonb)")
