"""Database-level refusal of UPDATE and DELETE on the audit log's tables, per dialect."""
from __future__ import annotations

APPEND_ONLY_TABLES = ("audit_event", "audit_checkpoint")


def _sqlite(table: str) -> list[str]:
    return [f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
            f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"""]


def _sqlite_drop(table: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {table}_no_update", f"DROP TRIGGER IF EXISTS {table}_no_delete"]


def _postgresql(table: str) -> list[str]:
    return [f"""CREATE OR REPLACE FUNCTION {table}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$""",
            f"""CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}
       FOR EACH ROW EXECUTE FUNCTION {table}_refuse()""",
            # TRUNCATE skips row triggers, so it needs a statement trigger of its own.
            f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
       FOR EACH STATEMENT EXECUTE FUNCTION {table}_refuse()"""]


def _postgresql_drop(table: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}",
            f"DROP FUNCTION IF EXISTS {table}_refuse()"]


def _known(table: str) -> str:
    if table not in APPEND_ONLY_TABLES:  # the names go into DDL text
        raise ValueError(f"{table} is not an audit table")
    return table


def create_statements(dialect: str, table: str = "audit_event") -> list[str]:
    table = _known(table)
    return {"sqlite": _sqlite, "postgresql": _postgresql}.get(dialect, lambda _t: [])(table)


def drop_statements(dialect: str, table: str = "audit_event") -> list[str]:
    table = _known(table)
    return {"sqlite": _sqlite_drop, "postgresql": _postgresql_drop}.get(dialect, lambda _t: [])(table)
