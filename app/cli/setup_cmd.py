"""flask setup org: the first organization, clinic and administrator of a real deployment."""
from __future__ import annotations

import secrets

import click
from flask.cli import with_appcontext

from app.domain import roles
from app.domain.ids import new_id
from app.extensions import db
from app.models import Clinic, Membership, Organization, User
from app.services.accounts import find_user, hash_password


@click.group()
def setup():
    """Set up a new deployment."""


@setup.command("org")
@click.option("--name", required=True, help="Organization name.")
@click.option("--clinic", "clinic_name", required=True, help="First clinic's name.")
@click.option("--clinic-code", required=True, help="Short code for the clinic, e.g. RIV.")
@click.option("--admin", "admin_username", required=True, help="Username of the first administrator.")
@with_appcontext
def org(name, clinic_name, clinic_code, admin_username):
    """Create them and print the administrator's one-time password."""
    if find_user(admin_username):
        raise click.ClickException(f"A user named {admin_username!r} already exists.")
    organization = Organization(id=new_id(), name=name)
    clinic = Clinic(id=new_id(), organization_id=organization.id, name=clinic_name,
                    code=clinic_code.upper())
    password = secrets.token_urlsafe(12)
    admin = User(id=new_id(), organization_id=organization.id, username=admin_username,
                 display_name=admin_username, password_hash=hash_password(password))
    db.session.add_all([organization, clinic, admin])
    db.session.flush()
    db.session.add(Membership(id=new_id(), user_id=admin.id, clinic_id=clinic.id,
                              role=roles.ORG_ADMIN))
    db.session.commit()
    click.echo(f"Organization {name!r} with clinic {clinic_name!r} is ready.")
    click.echo(f"Sign in as {admin_username} with password {password}. The first sign-in asks "
               "you to set up an authenticator app.")
