"""flask tokens create USERNAME: a bearer token for a non-browser client of /sync/v1."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.services import tokens as token_service
from app.services.accounts import find_user
from app.extensions import db


@click.group()
def tokens():
    """Bearer tokens for scripts and clinic hubs."""


@tokens.command("create")
@click.argument("username")
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
@with_appcontext
def create(username: str, name: str):
    """Print a new token for USERNAME. Only its hash is stored: copy it now."""
    user = find_user(username)
    if user is None or user.is_disabled:
        raise click.ClickException(f"No active user named {username!r}.")
    token = token_service.issue(user, name)
    db.session.commit()
    click.echo(token)
