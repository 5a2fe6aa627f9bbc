"""flask sync new-epoch: after restoring a backup, make every device refill and re-push."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.extensions import db


@click.group()
def sync():
    """Device sync."""


@sync.command("new-epoch")
@click.option("--reason", default="restored from backup", show_default=True,
              help="Why the epoch changes; kept with it.")
@with_appcontext
def new_epoch(reason: str):
    """Run once after restoring the database from a backup.

    Devices may hold changes the backup lacks. With a new epoch, each device's next pull is a
    reset: it refills its copy and sends again the mutations the server no longer has.
    """
    from sync_api.epoch import start_new_epoch
    epoch = start_new_epoch(reason)
    db.session.commit()
    click.echo(f"New sync epoch {epoch}. Devices will refill and re-send on their next sync.")
