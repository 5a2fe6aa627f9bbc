"""flask audit verify: re-check the hash chain and name the first broken row."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.services.audit import verify as verify_chain


@click.group()
def audit():
    """The audit log."""


@audit.command("verify")
@with_appcontext
def verify():
    report = verify_chain()
    if report.ok:
        click.echo(f"Audit chain intact: {report.rows_checked} rows checked.")
        return
    click.echo(f"Audit chain broken at row {report.first_bad_id}: {report.problem} "
               f"({report.rows_checked} rows before it are intact.)", err=True)
    raise SystemExit(1)
