"""Fixtures: a migrated database per test (SQLite, and PostgreSQL for tests marked so),
an organization with a user per role in two clinics, and signed-in test clients."""
from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
import sqlalchemy as sa

from app import create_app
from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import Clinic, Membership, Organization, User
from app.services.accounts import hash_password
from app.services.actor import Actor
from app.services.apply import apply
from app.services.results import Mutation
from app.web import sessions

PASSWORD = "correct horse battery"
PG_URL = os.environ.get("TEST_POSTGRES_URL")
BASE_OVERRIDES = {"TESTING": True, "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False}


hashed_password = functools.cache(hash_password)  # scrypt is slow by design: hash once


@pytest.fixture(autouse=True)
def short_lock_wait(monkeypatch):
    """A request that waits on an SQLite lock fails in 1 s here, not after the real 15 s."""
    monkeypatch.setattr("app.database.BUSY_TIMEOUT_MS", 1000)


def _no_fsync(dbapi_connection, _record):
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA synchronous=OFF")


def pytest_collection_modifyitems(config, items):
    """PostgreSQL variants run only for tests marked `postgres`."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and callspec.params.get("backend") == "postgresql"
        (drop if on_pg and item.get_closest_marker("postgres") is None else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _migrate(main_url: str, audit_url: str) -> None:
    from flask_migrate import upgrade
    app = create_app({**BASE_OVERRIDES, "SQLALCHEMY_DATABASE_URI": main_url,
                      "SQLALCHEMY_BINDS": {"audit": audit_url}})
    with app.app_context():
        upgrade()
        db.engine.dispose()
        db.engines["audit"].dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    _migrate(f"sqlite:///{folder / 'clinic.db'}", f"sqlite:///{folder / 'audit.db'}")
    return folder


def _pg_admin_engine():
    return sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
                            if PG_URL.startswith("postgresql://") else PG_URL,
                            isolation_level="AUTOCOMMIT")


def _pg_url(name: str) -> str:
    return sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def require_postgres() -> None:
    """Locally, no cluster means skip; in CI a missing cluster is a failure, never a skip."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh")
        pytest.skip("no PostgreSQL: run the suite with scripts/test.sh")


@contextmanager
def pg_databases(prefix: str, templates: tuple[str, str] | None = None):
    """A main and an audit database that exist for the block, as (name, name)."""
    require_postgres()
    suffix = uuid.uuid4().hex[:8]
    names = (f"{prefix}_main_{suffix}", f"{prefix}_audit_{suffix}")
    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            for n, name in enumerate(names):
                template = f' TEMPLATE "{templates[n]}"' if templates else ""
                conn.execute(sa.text(f'CREATE DATABASE "{name}"{template}'))
        yield names
    finally:
        with engine.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="session")
def pg_template():
    with pg_databases("tmpl") as names:
        _migrate(_pg_url(names[0]), _pg_url(names[1]))
        yield names


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


@pytest.fixture
def database_urls(backend, request, tmp_path):
    """Fresh copies of the migrated databases for one test."""
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        for name in ("clinic.db", "audit.db"):
            shutil.copy(template / name, tmp_path / name)
        yield f"sqlite:///{tmp_path / 'clinic.db'}", f"sqlite:///{tmp_path / 'audit.db'}"
        return
    templates = request.getfixturevalue("pg_template")
    with pg_databases("t", templates) as names:
        yield _pg_url(names[0]), _pg_url(names[1])


@pytest.fixture
def app_overrides(request) -> dict:
    """Configuration for one test (see `config`); override in a test module to change it for
    the whole module."""
    return getattr(request, "param", {})


def config(**overrides):
    """Mark a test to run with these settings."""
    return pytest.mark.parametrize("app_overrides", [overrides], indirect=True, ids=["config"])


@pytest.fixture
def app(database_urls, app_overrides):
    main_url, audit_url = database_urls
    if main_url.startswith("sqlite"):
        # Throwaway databases need not survive a power cut: skip the fsync of every commit.
        sa.event.listen(sa.engine.Engine, "connect", _no_fsync)
    application = create_app({**BASE_OVERRIDES, "SQLALCHEMY_DATABASE_URI": main_url,
                              "SQLALCHEMY_BINDS": {"audit": audit_url}, **app_overrides})
    @application.before_request
    def _forget_cached_user():
        # The fixture keeps one app context open for the test body, and requests reuse it;
        # in production every request has a fresh `g`. Without this, flask-login's cached
        # user would leak from one request (or one signed-in client) into the next.
        from flask import g
        g.pop("_login_user", None)
        # Likewise the database session: a request starts with no transaction of the test's open.
        db.session.rollback()

    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()
        db.engines["audit"].dispose()
    if sa.event.contains(sa.engine.Engine, "connect", _no_fsync):
        sa.event.remove(sa.engine.Engine, "connect", _no_fsync)


@dataclass
class World:
    """An organization with clinics 'A' and 'B' and one user per role in each."""

    org: Organization
    clinics: dict[str, Clinic]
    users: dict[tuple[str, str], User] = field(default_factory=dict)

    def user(self, role: str, clinic: str = "A") -> User:
        return self.users[(clinic, role)]

    def actor(self, role: str, clinic: str = "A") -> Actor:
        user = self.user(role, clinic)
        return Actor(user_id=user.id, username=user.username, organization_id=self.org.id,
                     clinic_id=self.clinics[clinic].id, roles=frozenset({role}))

    def totp(self, user: User) -> pyotp.TOTP:
        return pyotp.TOTP(user.totp_secret)


@pytest.fixture
def world(app) -> World:
    org = Organization(id=new_id(), name="Test Health")
    db.session.add(org)
    clinics = {}
    for key, name in (("A", "Clinic A"), ("B", "Clinic B")):
        clinics[key] = Clinic(id=new_id(), organization_id=org.id, name=name, code=f"T{key}")
        db.session.add(clinics[key])
    built = World(org=org, clinics=clinics)
    password_hash = hashed_password(PASSWORD)
    for key, clinic in clinics.items():
        for role in r.ROLES:
            user = User(id=new_id(), organization_id=org.id, username=f"{role}.{key.lower()}",
                        display_name=f"{r.ROLE_LABELS[role]} {key}", password_hash=password_hash,
                        totp_secret=pyotp.random_base32())
            db.session.add(user)
            db.session.flush()
            db.session.add(Membership(id=new_id(), user_id=user.id, clinic_id=clinic.id, role=role))
            built.users[(key, role)] = user
    db.session.commit()
    return built


@pytest.fixture
def write(app):
    """write(actor, type, entity, data, entity_id=None, **envelope) -> Result, committed."""
    def _write(actor: Actor, type_name: str, entity: str, data: dict, entity_id: str | None = None,
               **envelope):
        mutation = Mutation(mid=envelope.pop("mid", None) or new_id(), type=type_name,
                            entity=entity, entity_id=entity_id or new_id(), data=data, **envelope)
        result = apply(mutation, actor, source="test")
        db.session.commit()
        return result
    return _write


@pytest.fixture
def register(write):
    """register(actor, **fields) -> patient id, for a patient at the actor's clinic."""
    def _register(actor: Actor, **fields) -> str:
        data = {"given_name": "Test", "family_name": "Patient", "sex": "female",
                "birth_date": "1990-05-17", "clinic_id": actor.clinic_id, **fields}
        result = write(actor, "patient.register", "patient", data)
        assert result.status == "applied", result.error
        return result.entity_id
    return _register


@pytest.fixture
def client_for(app):
    """client_for(user, clinic_id=None): a test client already signed in as that user."""
    def _client(user: User, clinic_id: str | None = None):
        client = app.test_client()
        with app.test_request_context():
            from flask import session
            sessions.start(user)
            token = session["sid"]
            db.session.commit()
        with client.session_transaction() as sess:
            sess["sid"] = token
            sess["_user_id"] = user.id
            sess["_fresh"] = True
        if clinic_id:
            with app.test_request_context():
                row = db.session.execute(sa.select(sessions.UserSession).where(
                    sessions.UserSession.token_hash == sessions.token_hash(token))).scalar_one()
                row.clinic_id = clinic_id
                db.session.commit()
        return client
    return _client
