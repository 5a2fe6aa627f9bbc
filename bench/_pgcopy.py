"""A seeded SQLite clinic (bench/_clinic.py) copied into PostgreSQL, row for row.

Seeding through apply() takes minutes per hundred thousand records; copying the result takes
seconds and gives PostgreSQL exactly the rows SQLite holds. The schema is the app's own
(`flask db upgrade` on the new databases); rows go through SQLAlchemy Core with the app's
tables on both sides, so every column type converts as the app would read and write it.
Sealed fields stay sealed (the copy never opens them; both sides use the same keys).
Foreign keys are not checked during the copy (`session_replication_role = replica`: the
source was consistent), and every sequence is moved past the highest id copied.
"""
from __future__ import annotations

import time

from _backends import flask_cli

CHUNK = 2000


def copy_into_postgres(sqlite_urls: tuple[str, str], backend, name: str, log) -> tuple[str, str]:
    """Create databases `name` on the PostgreSQL backend holding the SQLite clinic."""
    from sqlalchemy import create_engine, func, inspect, select, text
    from _ceiling import make_app
    t0 = time.monotonic()
    backend.drop(name)
    backend.create(name)
    urls = backend.urls(name)
    flask_cli(urls, "db", "upgrade")
    app = make_app(backend, urls)  # for the app's table definitions
    from app.extensions import db
    copied = 0
    with app.app_context():
        for bind, src_url, dst_url in ((None, sqlite_urls[0], urls[0]), ("audit", sqlite_urls[1], urls[1])):
            metadata = db.metadatas[bind]
            src = create_engine(src_url)
            dst = create_engine(backend.sa_url(dst_url))
            present = set(inspect(src).get_table_names())
            with src.connect() as s, dst.begin() as d:
                d.execute(text("SET session_replication_role = replica"))
                tables = [t for t in metadata.sorted_tables if t.name in present]
                d.execute(text("TRUNCATE " + ", ".join(f'"{t.name}"' for t in tables) + " CASCADE"))
                for table in tables:
                    result = s.execute(select(table)).mappings()
                    while True:
                        rows = result.fetchmany(CHUNK)
                        if not rows:
                            break
                        d.execute(table.insert(), [dict(r) for r in rows])
                        copied += len(rows)
                    if len(table.primary_key.columns) == 1:
                        column = next(iter(table.primary_key.columns))
                        seq = d.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                        {"t": f'"{table.name}"', "c": column.name}).scalar()
                        top = d.execute(select(func.max(column))).scalar() if seq else None
                        if top is not None:
                            d.execute(text("SELECT setval(:s, :v)"), {"s": seq, "v": top})
            src.dispose()
            dst.dispose()
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()
    with backend.connect(urls[0]) as con:
        con.execute("VACUUM ANALYZE")
    with backend.connect(urls[1]) as con:
        con.execute("VACUUM ANALYZE")
    log(f"  copied {copied:,} rows into PostgreSQL ({name}) in {time.monotonic() - t0:.0f} s")
    return urls
