"""Rows written in bulk, without the ORM: one statement per table and batch."""
from __future__ import annotations

import functools

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


def insert_into_tables(connection, rows_by_table: list[tuple],
                       updates: list[tuple] = ()) -> None:
    """insert_rows for each (table, rows), in that order, then each update (table, key column,
    key, new values by column) of one row. On PostgreSQL, when every table gets a few rows,
    all go as one statement (each INSERT and UPDATE in a WITH clause): a reading pushed alone
    writes four tables and its device's row, with one round trip instead of five. Foreign
    keys and triggers are checked at the end of that statement, as they would be at the end
    of each, so a failure is the same IntegrityError, and nothing of it is written."""
    if (connection.dialect.name != "postgresql" or not rows_by_table
            or len(rows_by_table) + len(updates) < 2
            or any(len(rows) > FEW_ROWS for _, rows in rows_by_table)):
        for table, rows in rows_by_table:
            insert_rows(connection, table, rows)
        for table, key, key_value, values in updates:
            connection.execute(_update_one(table, key, tuple(values)),
                               {"key": key_value, **{f"new_{k}": v for k, v in values.items()}})
        return
    # The last INSERT is the statement's own; the other INSERTs, then the UPDATEs, come
    # before it as WITH clauses, their values in that order.
    *before, (last_table, last_rows) = rows_by_table
    parts, parameters = [], []
    for table, rows in before:
        parts.append(_insert_part(connection, table, rows, parameters))
    for table, key, key_value, values in updates:
        columns = (*values, key)
        parts.append(("update", table, key, tuple(values)))
        parameters.extend(_as_sent(table, columns, [{**values, key: key_value}],
                                   connection.dialect)[0])
    parts.append(_insert_part(connection, last_table, last_rows, parameters))
    connection.exec_driver_sql(_together_statement(tuple(parts), connection.dialect),
                               tuple(parameters))


def _insert_part(connection, table, rows: list[dict], parameters: list) -> tuple:
    columns = tuple(rows[0])
    for row in _as_sent(table, columns, rows, connection.dialect):
        parameters.extend(row)
    return ("insert", table, columns, len(rows))


@functools.lru_cache(maxsize=256)
def _together_statement(parts: tuple, dialect) -> str:
    *first, last = [_values_statement(*part[1:], dialect) if part[0] == "insert"
                    else _update_statement(*part[1:], dialect) for part in parts]
    return ("WITH " + ", ".join(f"w{n} AS ({statement})" for n, statement in enumerate(first))
            + " " + last)


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
    columns = tuple(name for name in rows[0] if name != "id")
    if connection.dialect.name == "postgresql":
        names = ("id", *columns)
        processors = _processors(table, names, connection.dialect)
        arrays = {f"c{n}": [_sent(row[name], process) for row in rows]
                  for n, (name, process) in enumerate(zip(names, processors))}
        statement = _unnest_statement(table, columns, connection.dialect)
        changed = connection.exec_driver_sql(statement, arrays).rowcount
    else:
        changed = connection.execute(_update_one(table, "id", columns), [
            {"key": row["id"], **{f"new_{name}": row[name] for name in columns}}
            for row in rows]).rowcount
    if changed != len(rows):
        raise StaleDataError(f"{table.name}: {changed} of {len(rows)} rows changed; "
                             "a row to change was not there.")


@functools.lru_cache(maxsize=64)
def _unnest_statement(table, columns: tuple[str, ...], dialect) -> str:
    quote = dialect.identifier_preparer
    names = ("id", *columns)
    arrays = ", ".join(f"CAST(%(c{n})s AS {table.c[name].type.compile(dialect)}[])"
                       for n, name in enumerate(names))
    assignments = ", ".join(f"{quote.quote(name)} = v.{quote.quote(name)}" for name in columns)
    target, aliases = quote.format_table(table), ", ".join(quote.quote(n) for n in names)
    return (f"UPDATE {target} AS t SET {assignments} "  # nosec B608: quoted names
            f"FROM unnest({arrays}) AS v({aliases}) WHERE t.id = v.id")
