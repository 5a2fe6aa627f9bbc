"""The app in this process (for setup), the census of what one push writes, and the raw
write ceiling of exactly those rows.

Census: the same pushes go through the app in-process (Flask test client: routing, auth,
apply, audit, commit) on a fresh clone of the base, with every statement the two engines
send to the database recorded (SQLAlchemy cursor events) along with each commit. The
INSERT/UPDATE/DELETE statements and their row counts (and the rows the app sends with COPY
on PostgreSQL, recorded at app.services.bulk_rows.copy_rows) give the rows written per mutation,
table by table.

Ceiling: those recorded writes, with their parameters, are replayed on another fresh clone
with the raw driver (sqlite3 / psycopg 3), as peers/sql_ceilings.py does: per transaction
of the app (one push request = one main-database and one audit-database transaction), the
rows of each statement go in one executemany, then one commit. No reads, locks, savepoints,
ORM, JSON or HTTP: what writing the same rows with the same durability costs on this disk.
"""
from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter, OrderedDict

from _backends import SECRET_KEY
from _paths import use_repo

_WRITE = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY)\s+\"?([A-Za-z_][A-Za-z0-9_]*)",
                    re.IGNORECASE)


def make_app(backend, urls):
    sys.dont_write_bytecode = True  # nothing written into the app's folders
    os.environ.setdefault("SECRET_KEY", SECRET_KEY)
    os.environ.setdefault("APP_ENV", "development")
    use_repo()
    from app import create_app
    return create_app({"SQLALCHEMY_DATABASE_URI": backend.sa_url(urls[0]),
                       "SQLALCHEMY_BINDS": {"audit": backend.sa_url(urls[1])}})


def dispose(app):
    from app.extensions import db
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def push_inprocess(app, token: str, bodies: list[bytes]) -> Counter:
    statuses = Counter()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for body in bodies:
        response = client.post("/sync/v1/push", data=body, headers=headers)
        if response.status_code != 200:
            statuses[f"http {response.status_code}: {response.get_data()[:300]!r}"] += 1
            continue
        for r in response.get_json()["results"]:
            statuses[r["status"] if r["status"] != "rejected" else f"rejected {r.get('error')}"] += 1
    return statuses


class Recorder:
    """Every statement the app's engines execute, and their commits, in order."""

    def __init__(self, app):
        from sqlalchemy import event
        from app.extensions import db
        self.events = []
        self.app = app
        with app.app_context():
            self.engines = {"main": db.engine, "audit": db.engines["audit"]}
        self._listeners = []
        for key, engine in self.engines.items():
            def on_exec(conn, cursor, statement, parameters, context, executemany, key=key):
                if statement.startswith(_TOGETHER):
                    # Several tables' rows in one statement (bulk_rows.insert_into_tables):
                    # counted, and written again, as each INSERT or UPDATE it holds.
                    for part, values in _parts(statement, parameters):
                        self.events.append(("exec", key, *_as_written(part, values)))
                    return
                # SQLAlchemy sends an INSERT ... RETURNING on SQLite row by row, flagged as
                # executemany with one row's parameters.
                many = executemany and _is_rows(parameters)
                self.events.append(("exec", key, statement,
                                    list(parameters) if many else _one_row(parameters),
                                    many, _rows_written(statement, cursor.rowcount)))

            def on_commit(conn, key=key):
                self.events.append(("commit", key))

            def on_rollback(conn, key=key):
                self.events.append(("rollback", key))
            for name, fn in (("after_cursor_execute", on_exec), ("commit", on_commit),
                             ("rollback", on_rollback)):
                event.listen(engine, name, fn)
                self._listeners.append((engine, name, fn))
        # Rows the app sends with COPY (PostgreSQL) pass no cursor event: recorded here.
        from app.services import bulk_rows
        self._bulk_rows, self._copy_rows = bulk_rows, bulk_rows.copy_rows

        def copy_rows(connection, statement, values):
            self._copy_rows(connection, statement, values)
            key = next(k for k, e in self.engines.items() if e is connection.engine)
            self.events.append(("exec", key, statement, [tuple(v) for v in values], True,
                                len(values)))
        bulk_rows.copy_rows = copy_rows

    def close(self):
        from sqlalchemy import event
        for engine, name, fn in self._listeners:
            event.remove(engine, name, fn)
        self._bulk_rows.copy_rows = self._copy_rows

    def transactions(self) -> list[tuple[str, list[tuple]]]:
        """Committed write transactions in commit order: (key, [(statement, params, many)])."""
        pending = {"main": [], "audit": []}
        out = []
        for ev in self.events:
            if ev[0] == "exec":
                _, key, statement, params, many, _rc = ev
                if _WRITE.match(statement):
                    pending[key].append((statement, params, many))
            elif ev[0] == "commit":
                if pending[ev[1]]:
                    out.append((ev[1], pending[ev[1]]))
                pending[ev[1]] = []
            else:  # rollback: nothing of it was written
                pending[ev[1]] = []
        return out

    def statements(self) -> Counter:
        """Statements sent per kind (select, insert, update, savepoint, ...), all engines."""
        kinds = Counter()
        for ev in self.events:
            if ev[0] == "exec":
                word = ev[2].lstrip().split(None, 1)[0].lower() if ev[2].strip() else "?"
                kinds["savepoint" if word in ("savepoint", "release") else word] += 1
        return kinds

    def census(self) -> Counter:
        """Rows written per (table, verb) by committed transactions."""
        rows = Counter()
        pending = {"main": Counter(), "audit": Counter()}
        for ev in self.events:
            if ev[0] == "exec":
                m = _WRITE.match(ev[2])
                if m:
                    verb = m.group(1).split()[0].lower().replace("copy", "insert")
                    table = m.group(2) + (" (audit db)" if ev[1] == "audit" else "")
                    pending[ev[1]][(table, verb)] += max(ev[5], 0)
            elif ev[0] == "commit":
                rows.update(pending[ev[1]])
                pending[ev[1]] = Counter()
            else:
                pending[ev[1]] = Counter()
        return rows


_TOGETHER = "WITH w0 AS ("
_PART = re.compile(r"^WITH w0 AS \(|\), w\d+ AS \(")
_UNNEST_INSERT = re.compile(r"^INSERT INTO (\S+) \(([^)]*)\) SELECT \* FROM unnest\(")


def _parts(statement: str, parameters) -> list[tuple[str, tuple]]:
    """The INSERTs and UPDATEs of a `WITH w0 AS (INSERT ...), w1 AS (UPDATE ...) SELECT ...`
    statement, each with its share of the parameters (every value, or every column's array,
    is one %s or %b, in order)."""
    parts, values = [], tuple(parameters)
    # The statement's own SELECT (after its last WITH clause) writes nothing.
    for part in filter(None, _PART.split(statement.rsplit(") SELECT ", 1)[0])):
        count = part.count("%s") + part.count("%b")
        parts.append((part.removesuffix(" RETURNING 1"), values[:count]))
        values = values[count:]
    return parts


def _as_written(part: str, values: tuple) -> tuple:
    """(statement, parameters, many, rows) to record for one part: rows sent as one array
    per column are replayed with COPY, as the raw ceiling writes many rows."""
    if "FROM unnest(" not in part:
        return part, values, False, _value_groups(part)
    rows = len(values[0])
    insert = _UNNEST_INSERT.match(part)
    if insert is None:  # an UPDATE from arrays: replayed as it is
        return part, values, False, rows
    return (f"COPY {insert.group(1)} ({insert.group(2)}) FROM STDIN", list(zip(*values)), True,
            rows)


def _rows_in(statement: str, params: list) -> int:
    """Rows the recorded executions of one statement write."""
    if "FROM unnest(" in statement:
        return sum(len(p[0]) for p in params)
    return len(params) * _value_groups(statement)


def _is_rows(parameters) -> bool:
    first = next(iter(parameters), None)
    return isinstance(first, (list, tuple, dict))


def _one_row(parameters):
    # SQLAlchemy passes a multi-row INSERT's parameters as a list; sqlite3 takes a sequence
    # or a mapping but not every sequence type.
    return tuple(parameters) if isinstance(parameters, list) else parameters


def _rows_written(statement: str, rowcount: int) -> int:
    """sqlite3 reports no rows for an INSERT ... RETURNING until they are read: count the
    VALUES groups of the statement instead."""
    upper = statement.lstrip().upper()
    if rowcount > 0 or not (upper.startswith("INSERT") and "RETURNING" in upper):
        return rowcount
    return _value_groups(statement)


def _value_groups(statement: str) -> int:
    """Rows one execution of the statement writes: an INSERT of several VALUES (the app
    sends a few rows to PostgreSQL that way) writes one per group."""
    upper = statement.lstrip().upper()
    if not upper.startswith("INSERT") or " VALUES " not in upper:
        return 1
    return upper.split(" VALUES ", 1)[1].count("), (") + 1


def _raw(backend, url):
    con = backend.connect(url)
    if backend.name == "sqlite":
        # The app's own settings (app/database.py).
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=15000")
    else:
        con.autocommit = False
    return con


def replay(backend, urls, transactions) -> tuple[float, int]:
    """Write the recorded rows again with the raw driver; returns (seconds, rows)."""
    cons = {"main": _raw(backend, urls[0]), "audit": _raw(backend, urls[1])}
    plan = []
    for key, writes in transactions:
        groups: OrderedDict[str, list] = OrderedDict()
        for statement, params, many in writes:
            groups.setdefault(statement, []).extend(params if many else [params])
        plan.append((key, list(groups.items())))
    rows = sum(_rows_in(s, p) for _, g in plan for s, p in g)
    sqlite = backend.name == "sqlite"
    try:
        t0 = time.perf_counter()
        for key, groups in plan:
            con = cons[key]
            cur = con.cursor()
            if sqlite:
                cur.execute("BEGIN IMMEDIATE")
            for statement, params in groups:
                if statement.startswith("COPY "):
                    with cur.copy(statement) as copy:
                        for p in params:
                            copy.write_row(p)
                elif len(params) == 1 or (sqlite and "RETURNING" in statement.upper()):
                    for p in params:
                        cur.execute(statement, p)
                        if cur.description:
                            cur.fetchall()
                else:
                    cur.executemany(statement, params)
            if sqlite:
                cur.execute("COMMIT")
            else:
                con.commit()
        seconds = time.perf_counter() - t0
    finally:
        for con in cons.values():
            con.close()
    return seconds, rows
