"""flask demo seed: a demo organization to try the app with (never in production)."""
from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from app.demo import seed as demo_seed


@click.group()
def demo():
    """Demo data for trying the app."""


@demo.command("seed")
@click.option("--patients", default=200, show_default=True, type=click.IntRange(0, 100_000),
              help="How many demo patients to create.")
@click.option("--json", "as_json", is_flag=True, help="Print the demo users as JSON.")
@with_appcontext
def seed(patients: int, as_json: bool):
    """Create the demo organization if it is absent, then print its sign-ins."""
    if current_app.config["APP_ENV"] == "production":
        raise click.ClickException("Demo data is refused in production (APP_ENV=production).")
    progress = None if as_json else (lambda done, total: click.echo(
        f"  demo patients: {done}/{total}", err=True))
    users = demo_seed.ensure_demo(patients, progress=progress)
    if as_json:
        click.echo(json.dumps(users, indent=2))
        return
    click.echo("Demo sign-ins (password, then the code from an authenticator app set up with "
               "the secret):")
    for user in users:
        click.echo(f"  {user['username']:<18} {user['password']:<24} "
                   f"{user['role']:<20} {user['clinic']:<16} TOTP secret {user['totp_secret']}")
