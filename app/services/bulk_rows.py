"""Rows written in bulk, without the ORM: one statement per table and batch, or one for all."""
from __future__ import annotations

import functools
import re

from sqlalchemy import bindparam, insert, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.exc import StaleDataError


# Up to this many rows go to PostgreSQL as one INSERT: COPY takes two round trips (the
# statement, then the data) and costs more on both sides for up to five rows, less from
# twenty on (measured with a commit each); between them it is about even.
FEW_ROWS = 8


def insert_rows(connection, table, rows: list[dict]) -> None:
    """Rows (dicts with the same keys) into `table`, in the connection's transaction.

    On PostgreSQL a few rows go as one INSERT of several VALUES, more with COPY: an INSERT
    of many rows goes through psycopg one row at a time (a pipeline), at about twice the
    server CPU per row; COPY checks the same constraints and fires the same triggers. Each
    value still goes through its column type, as SQLAlchemy would send it, and a failure is
    raised as SQLAlchemy's exception of the same kind (an IntegrityError for a taken id), so
    callers cannot tell the ways apart."""
    if connection.dialect.name != "postgresql":
        connection.execute(_insert_into(table), rows)
        return
    columns = tuple(rows[0])
    values = _as_sent(table, columns, rows, connection.dialect)
    if len(rows) <= FEW_ROWS:
        statement = _values_statement(table, columns, len(rows), connection.dialect)
        connection.exec_driver_sql(statement, tuple(value for row in values for value in row))
        return
    copy_rows(connection, _copy_statement(table, columns, connection.dialect), values)


def insert_into_tables(connection, rows_by_table: list[tuple], updates: list[tuple] = (),
                       changes: list[tuple] = ()) -> None:
    """insert_rows for each (table, rows), in that order; then each update (table, key column,
    key, new values by column) of one row; then each change (table, rows by id, as
    update_rows takes them).

    On PostgreSQL all go as one statement, each INSERT and UPDATE in a WITH clause: a batch
    writes four or five tables, and one round trip instead of one per table (two per COPY)
    keeps the database's time and the server's from adding up, statement after statement.
    A few rows go as VALUES, more as one array per column (unnest), which keeps the statement
    short and the same for any count, so the driver prepares it once. Foreign keys and
    triggers are checked at the end of that statement, as they would be at the end of each,
    so a failure is the same IntegrityError, and nothing of it is written."""
    together = (connection.dialect.name == "postgresql"
                and _may_go_together(rows_by_table, updates, changes)
                and _together_parts(rows_by_table, updates, changes, connection.dialect))
    if not together:
        for table, rows in rows_by_table:
            insert_rows(connection, table, rows)
        for table, key, key_value, values in updates:
            connection.execute(_update_one(table, key, tuple(values)),
                               {"key": key_value, **{f"new_{k}": v for k, v in values.items()}})
        for table, rows in changes:
            update_rows(connection, table, rows)
        return
    parts, parameters = together
    counts = connection.exec_driver_sql(_together_statement(parts, connection.dialect),
                                        parameters).one()
    for (table, rows), changed in zip(changes, counts):
        _check_changed(table, changed, len(rows))


def _may_go_together(rows_by_table, updates, changes) -> bool:
    """Whether the writes may go as one statement: more than one of them (one alone goes the
    cheapest way for itself), no table changed twice (a statement keeps only one of two
    changes to the same row), and none changed where rows are inserted (every part reads the
    snapshot the statement began with, so a change would not see a row inserted beside it)."""
    if len(rows_by_table) + len(updates) + len(changes) < 2:
        return False
    changed_tables = [table for table, *_ in updates] + [table for table, _ in changes]
    return (len(set(changed_tables)) == len(changed_tables)
            and not set(changed_tables) & {table for table, _ in rows_by_table})


def _together_parts(rows_by_table, updates, changes, dialect) -> tuple[tuple, tuple] | None:
    """The statement's parts and its parameters in their order; None when some column's
    values cannot be sent as one array (_as_arrays)."""
    parts, parameters = [], []
    for table, rows in rows_by_table:
        columns = tuple(rows[0])
        if len(rows) <= FEW_ROWS:
            parts.append(("insert", table, columns, len(rows)))
            for row in _as_sent(table, columns, rows, dialect):
                parameters.extend(row)
            continue
        arrays = _as_arrays(table, columns, rows, dialect)
        if arrays is None:
            return None
        parts.append(("insert_arrays", table, columns))
        parameters.extend(arrays)
    for table, key, key_value, values in updates:
        parts.append(("update", table, key, tuple(values)))
        parameters.extend(_as_sent(table, (*values, key), [{**values, key: key_value}],
                                   dialect)[0])
    for table, rows in changes:
        columns = _changed_columns(rows)
        arrays = _as_arrays(table, ("id", *columns), rows, dialect)
        if arrays is None:
            return None
        parts.append(("change", table, columns))
        parameters.extend(arrays)
    return tuple(parts), tuple(parameters)


def _as_arrays(table, columns: tuple[str, ...], rows: list[dict], dialect) -> list[list] | None:
    """One list per column, each value through its column type; None when a column holds
    values of several kinds, as the driver sends a list as an array of one type. Ints among
    floats (36 from one device, 36.6 from another) are sent as floats."""
    arrays = []
    for name, process in zip(columns, _processors(table, columns, dialect)):
        values = [_sent(row[name], process) for row in rows]
        kinds = set(map(type, values))
        kinds.discard(type(None))
        if len(kinds) > 1:
            if kinds != {int, float}:
                return None
            values = [value if value is None else float(value) for value in values]
        arrays.append(values)
    return arrays


def _changed_columns(rows: list[dict]) -> tuple[str, ...]:
    return tuple(name for name in rows[0] if name != "id")


def _check_changed(table, changed: int, wanted: int) -> None:
    if changed != wanted:
        raise StaleDataError(f"{table.name}: {changed} of {wanted} rows changed; "
                             "a row to change was not there.")


@functools.lru_cache(maxsize=256)
def _together_statement(parts: tuple, dialect) -> str:
    """Every part in a WITH clause (one that changes data runs whether or not anything reads
    it); the statement answers how many rows each change part changed."""
    statements, counted = [], []
    for n, (kind, *part) in enumerate(parts):
        if kind == "insert":
            statements.append(_values_statement(*part, dialect))
        elif kind == "insert_arrays":
            statements.append(_unnest_insert_statement(*part, dialect))
        elif kind == "update":
            statements.append(_update_statement(*part, dialect))
        else:
            statements.append(_unnest_statement(*part, dialect) + " RETURNING 1")
            counted.append(f"(SELECT count(*) FROM w{n})")  # nosec B608: our own names
    return ("WITH " + ", ".join(f"w{n} AS ({statement})" for n, statement in enumerate(statements))
            + " SELECT " + (", ".join(counted) or "0"))


@functools.lru_cache(maxsize=16)
def _update_statement(table, key: str, columns: tuple[str, ...], dialect) -> str:
    quote = dialect.identifier_preparer
    assignments = ", ".join(f"{quote.quote(name)} = %s" for name in columns)
    return (f"UPDATE {quote.format_table(table)} SET {assignments} "  # nosec B608: quoted names
            f"WHERE {quote.quote(key)} = %s")


@functools.lru_cache(maxsize=64)
def _update_one(table, key: str, columns: tuple[str, ...]):
    return (update(table).where(table.c[key] == bindparam("key"))
            .values({name: bindparam(f"new_{name}") for name in columns}))


def copy_rows(connection, statement: str, values: list[list]) -> None:
    base_error = connection.dialect.loaded_dbapi.Error
    try:
        with connection.connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in values:
                copy.write_row(row)
    except base_error as exc:
        raise DBAPIError.instance(statement, None, exc, base_error,
                                  dialect=connection.dialect) from exc


@functools.cache
def _insert_into(table):
    return insert(table)


@functools.lru_cache(maxsize=64)
def _copy_statement(table, columns: tuple[str, ...], dialect) -> str:
    quote = dialect.identifier_preparer
    return (f"COPY {quote.format_table(table)} "
            f"({', '.join(quote.quote(name) for name in columns)}) FROM STDIN")


@functools.lru_cache(maxsize=256)
def _values_statement(table, columns: tuple[str, ...], count: int, dialect) -> str:
    quote = dialect.identifier_preparer
    row = f"({', '.join(['%s'] * len(columns))})"
    return (f"INSERT INTO {quote.format_table(table)} "  # nosec B608: quoted names
            f"({', '.join(quote.quote(name) for name in columns)}) "
            f"VALUES {', '.join([row] * count)}")


@functools.lru_cache(maxsize=64)
def _unnest_insert_statement(table, columns: tuple[str, ...], dialect) -> str:
    quote = dialect.identifier_preparer
    return (f"INSERT INTO {quote.format_table(table)} "  # nosec B608: quoted names
            f"({', '.join(quote.quote(name) for name in columns)}) "
            f"SELECT * FROM unnest({_typed_arrays(table, columns, dialect)})")


def _typed_arrays(table, columns: tuple[str, ...], dialect) -> str:
    # Binary: psycopg quotes each element of an array sent as text, at ten times the cost.
    # Without the type's length (VARCHAR, not VARCHAR(36)): an explicit cast would cut a
    # value too long for the column short, where the column's own check refuses it.
    return ", ".join(f"CAST(%b AS {_LENGTH.sub('', table.c[name].type.compile(dialect))}[])"
                     for name in columns)


_LENGTH = re.compile(r"\(.*?\)")


@functools.lru_cache(maxsize=64)
def _processors(table, columns: tuple[str, ...], dialect) -> tuple:
    """Each column's bind processor (None: sent as it is), as SQLAlchemy would apply it."""
    return tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                 for name in columns)


def _as_sent(table, columns: tuple[str, ...], rows: list[dict], dialect) -> list[list]:
    """Each row's values in `columns` order, through their column types."""
    processors = _processors(table, columns, dialect)
    return [[_sent(row[name], process) for name, process in zip(columns, processors)]
            for row in rows]


def _sent(value, process):
    return value if process is None else process(value)


def update_rows(connection, table, rows: list[dict]) -> None:
    """Change rows of `table` by id: each dict holds "id" and the new values of the same
    columns. On PostgreSQL in one statement (an UPDATE from unnested arrays, one per column),
    elsewhere as one executemany. A row that is not there is an error, as in a flush."""
    columns = _changed_columns(rows)
    arrays = (_as_arrays(table, ("id", *columns), rows, connection.dialect)
              if connection.dialect.name == "postgresql" else None)
    if arrays is not None:
        statement = _unnest_statement(table, columns, connection.dialect)
        changed = connection.exec_driver_sql(statement, tuple(arrays)).rowcount
    else:
        changed = connection.execute(_update_one(table, "id", columns), [
            {"key": row["id"], **{f"new_{name}": row[name] for name in columns}}
            for row in rows]).rowcount
    _check_changed(table, changed, len(rows))


@functools.lru_cache(maxsize=64)
def _unnest_statement(table, columns: tuple[str, ...], dialect) -> str:
    quote = dialect.identifier_preparer
    names = ("id", *columns)
    assignments = ", ".join(f"{quote.quote(name)} = v.{quote.quote(name)}" for name in columns)
    target, aliases = quote.format_table(table), ", ".join(quote.quote(n) for n in names)
    return (f"UPDATE {target} AS t SET {assignments} "  # nosec B608: quoted names
            f"FROM unnest({_typed_arrays(table, names, dialect)}) AS v({aliases}) "
            "WHERE t.id = v.id")
