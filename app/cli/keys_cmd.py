"""flask keys status | rotate: which field keys hold the sealed values; move them to the current one."""
from __future__ import annotations

from contextlib import contextmanager

import click
from flask.cli import with_appcontext

from app.database import read_only_intent
from app.extensions import db
from app.models.sealed import current_cipher
from app.services.key_rotation import BATCH_SIZE, reseal, status as key_status


@click.group()
def keys():
    """Field encryption keys (FIELD_ENCRYPTION_KEYS)."""


@contextmanager
def _reading():
    # Counting must not take SQLite's write lock away from the app.
    with read_only_intent(), db.engine.connect() as conn:
        yield conn


@keys.command("status")
@with_appcontext
def status():
    cipher = current_cipher()
    click.echo(f"Current key: {cipher.current_kid}; configured: {', '.join(cipher.key_ids)}.")
    for tally in key_status(_reading):
        counts = ", ".join(f"{kid}: {n}" for kid, n in sorted(tally.key_ids.items())) or "none"
        click.echo(f"{tally.name}: {tally.rows} rows; sealed values by key: {counts}")


@keys.command("rotate")
@click.option("--batch-size", default=BATCH_SIZE, show_default=True,
              help="Rows per transaction: smaller batches hold locks for less time.")
@with_appcontext
def rotate(batch_size: int):
    """Re-seal every value under the current key. Safe while the app serves, and safe to
    run again after an interruption: only values under other keys are rewritten."""
    cipher = current_cipher()
    click.echo(f"Re-sealing under key {cipher.current_kid}…")

    def progress(tally):
        click.echo(f"  {tally.name}: {tally.rows} rows read, {tally.rewritten} re-sealed")

    tallies = reseal(cipher, db.engine.begin, progress=progress, batch_size=batch_size)
    failures = [f for t in tallies for f in t.failures]
    rewritten = sum(t.rewritten for t in tallies)
    click.echo(f"Done: {rewritten} rows re-sealed under key {cipher.current_kid}.")
    if failures:
        for failure in failures[:20]:
            click.echo(f"  could not re-seal: {failure}", err=True)
        click.echo(f"{len(failures)} values could not be opened and were left as they are; "
                   "their keys must stay configured until they are dealt with.", err=True)
        raise SystemExit(1)
