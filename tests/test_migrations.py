"""The migrations build exactly the schema the models describe, and take it all down again.

Each test starts from empty databases (not the migrated template the other tests copy).
"""
from __future__ import annotations


import flask_migrate
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app import create_app
from app.extensions import db
from tests.conftest import BASE_OVERRIDES, _pg_url, pg_databases

pytestmark = pytest.mark.postgres

BINDS = (None, "audit")  # the clinic database and the audit database


@pytest.fixture
def empty_urls(backend, tmp_path):
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'clinic.db'}", f"sqlite:///{tmp_path / 'audit.db'}"
        return
    with pg_databases("mig") as names:
        yield _pg_url(names[0]), _pg_url(names[1])


@pytest.fixture
def fresh_app(empty_urls):
    main_url, audit_url = empty_urls
    application = create_app({**BASE_OVERRIDES, "SQLALCHEMY_DATABASE_URI": main_url,
                              "SQLALCHEMY_BINDS": {"audit": audit_url}})
    with application.app_context():
        yield application
        db.session.remove()
        for bind in BINDS:
            db.engines[bind].dispose()


def differences(bind) -> list:
    with db.engines[bind].connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "compare_server_default": True})
        return compare_metadata(context, db.metadatas[bind])


def tables(bind) -> set[str]:
    return set(sa.inspect(db.engines[bind]).get_table_names())


def leftovers(bind) -> set[str]:
    """Triggers, indexes and functions that would outlive a downgrade."""
    engine = db.engines[bind]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(sa.text(
                "SELECT type || ' ' || name FROM sqlite_master "
                "WHERE name NOT LIKE 'sqlite_%' AND tbl_name != 'alembic_version'"))
        else:
            rows = conn.execute(sa.text(
                "SELECT 'function ' || proname FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = 'public' "
                "UNION ALL SELECT 'type ' || typname FROM pg_type t JOIN pg_namespace n "
                "ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype = 'e'"))
        return set(rows.scalars())


def test_upgrade_builds_exactly_what_the_models_describe(fresh_app):
    flask_migrate.upgrade()
    for bind in BINDS:
        assert tables(bind) >= {"alembic_version"}, bind
        assert differences(bind) == [], f"models and migrations differ on {bind or 'main'}"
    assert "audit_event" in tables("audit") and "audit_event" not in tables(None)
    assert {"patient", "user", "change_log"} <= tables(None)


def test_downgrade_to_base_leaves_nothing_behind(fresh_app):
    flask_migrate.upgrade()
    flask_migrate.downgrade(revision="base")
    for bind in BINDS:
        assert tables(bind) == {"alembic_version"}, bind
        assert leftovers(bind) == set(), bind


def test_upgrade_after_a_downgrade_rebuilds_the_same_schema(fresh_app):
    flask_migrate.upgrade()
    flask_migrate.downgrade(revision="base")
    flask_migrate.upgrade()
    for bind in BINDS:
        assert differences(bind) == [], bind
    # The rebuilt audit log still refuses changes.
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with db.engines["audit"].begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO audit_event (id, at, action, outcome, detail, prev_hash, hash) "
                "VALUES (1, CURRENT_TIMESTAMP, 'x', 'success', '{}', 'a', 'b')"))
            conn.execute(sa.text("DELETE FROM audit_event"))


def test_the_change_log_takes_its_position_from_the_writing_transaction(fresh_app):
    """Writers leave txid out (migration 0007): PostgreSQL fills in the transaction's id, by
    which pulls order the log; SQLite, whose single writer commits in seq order, fills in 0."""
    flask_migrate.upgrade()
    engine = db.engines[None]
    with engine.begin() as conn:
        own = (conn.execute(sa.text("SELECT pg_current_xact_id()::text::bigint")).scalar()
               if engine.dialect.name == "postgresql" else 0)
        conn.execute(sa.text(
            "INSERT INTO change_log (entity, entity_id, version, op, created_at) "
            "VALUES ('patient', '00000000-0000-4000-8000-000000000001', 1, 'put', :now)"),
            {"now": "2026-11-22 12:00:00+00:00"})
        assert conn.execute(sa.text("SELECT txid FROM change_log")).scalar() == own
