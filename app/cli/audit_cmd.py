"""flask audit verify | checkpoint: re-check the chain and its signed checkpoints; sign one."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.models.records import to_json_value
from app.services.audit import checkpoint as sign_checkpoint
from app.services.audit import verify as verify_chain


@click.group()
def audit():
    """The audit log."""


@audit.command("verify")
@with_appcontext
def verify():
    report = verify_chain()
    if report.ok:
        click.echo(f"Audit chain intact: {report.rows_checked} rows checked. "
                   f"{report.checkpoints_checked} signed checkpoints match.")
        if report.uncovered_after is not None:
            click.echo(f"Rows after {report.uncovered_after} have no checkpoint yet: "
                       "`flask audit checkpoint` signs them.")
        return
    if report.checkpoint_id is not None:
        click.echo(f"Audit checkpoint {report.checkpoint_id} is broken: {report.problem}",
                   err=True)
    else:
        click.echo(f"Audit chain broken at row {report.first_bad_id}: {report.problem} "
                   f"({report.rows_checked} rows before it are intact.)", err=True)
    raise SystemExit(1)


@audit.command("checkpoint")
@with_appcontext
def checkpoint():
    """Sign the newest row. Print the result and keep it elsewhere too (a log, a ticket):
    a copy outside the database also shows rows cut off the end."""
    row = sign_checkpoint()
    if row is None:
        click.echo("The newest row already has a checkpoint; nothing to sign.")
        return
    click.echo(f"Checkpoint {row['id']}: row {row['event_id']} hash {row['event_hash']} "
               f"at {to_json_value(row['at'])} key {row['key_id']} signature {row['signature']}")
