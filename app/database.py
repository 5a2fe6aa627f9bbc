"""Engine behaviour that SQLAlchemy does not set for us.

SQLite: WAL (readers never wait for the writer), synchronous=FULL (a commit
survives power loss), foreign keys on, and transactions that will write start
with BEGIN IMMEDIATE, so two writers queue on the busy timeout instead of one
failing when it upgrades a read lock.

PostgreSQL: a pooled connection the server closed (a restart, a failover, an
administrator ending backends) is replaced before use, as SQLAlchemy's pre-ping would,
but without its round trip on every checkout (ends_unseen).
"""
from __future__ import annotations

import select
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

BUSY_TIMEOUT_MS = 15_000
_write_intent: ContextVar[bool] = ContextVar("sqlite_write_intent", default=True)


@contextmanager
def read_only_intent():
    token = _write_intent.set(False)
    try:
        yield
    finally:
        _write_intent.reset(token)


def set_write_intent(value: bool):
    return _write_intent.set(value)


def reset_write_intent(token) -> None:
    _write_intent.reset(token)


def configure_engine(engine, always_immediate: bool = False) -> None:
    if engine.dialect.name == "postgresql":
        _replace_connections_the_server_ended(engine)
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, decide when transactions begin (savepoints need it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        immediate = always_immediate or _write_intent.get()
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _replace_connections_the_server_ended(engine) -> None:
    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection, _record, _proxy):
        if ends_unseen(dbapi_connection):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and checks out (or opens) another.
            raise DisconnectionError("the server closed this pooled connection") from exc


def ends_unseen(dbapi_connection) -> bool:
    """True when an idle connection shows no sign of having been closed by the server.

    A server that ends a connection (a restart, pg_terminate_backend) sends its reason and
    closes the socket, so the socket turns readable; an idle connection otherwise has nothing
    to read. Looking costs a system call instead of a query's round trip per request. When
    something is there (the close, or a rare notice) the caller pings to know which. A link
    lost without the socket closing is caught by neither this nor a ping until TCP gives up.
    """
    if dbapi_connection.closed or dbapi_connection.broken:
        return False
    readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    return not readable
