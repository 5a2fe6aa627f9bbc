"""Server-side sessions: the cookie carries a random token, the server decides if it is alive."""
from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta, timezone

from flask import current_app, request, session
from sqlalchemy import bindparam, select, update

from app.database import read_only_intent, reset_write_intent, set_write_intent
from app.domain import roles
from app.domain.ids import new_id
from app.extensions import db
from app.models import Membership, User, UserSession
from app.models.types import utcnow
from app.services.actor import Actor

LAST_SEEN_RESOLUTION = timedelta(seconds=60)  # fewer writes; idle timeouts are minutes long


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Principal:
    """The signed-in person as flask-login sees them: user, session and active clinic."""

    user: User
    session_row: UserSession | None
    clinic_id: str | None
    roles: frozenset[str]
    is_authenticated: bool = True
    is_active: bool = True
    is_anonymous: bool = False

    def get_id(self) -> str:
        return self.user.id

    def actor(self, request_id: str | None = None, client_id: str | None = None) -> Actor:
        return Actor(user_id=self.user.id, username=self.user.username,
                     organization_id=self.user.organization_id, clinic_id=self.clinic_id,
                     roles=self.roles, client_id=client_id, request_id=request_id)


def memberships_of(user: User) -> dict[str, frozenset[str]]:
    """The user's roles at each of their clinics, clinics in the order they joined them: one
    query, since every signed-in page needs both (a bearer token reads them with the token)."""
    return roles.by_clinic(db.session.execute(_memberships(), {"user_id": user.id}))


@functools.cache
def _memberships():
    return (select(Membership.clinic_id, Membership.role)
            .where(Membership.user_id == bindparam("user_id")).order_by(Membership.created_at))


def roles_at(user: User, clinic_id: str | None) -> frozenset[str]:
    return memberships_of(user).get(clinic_id, frozenset())


def clinics_of(user: User) -> list[str]:
    return list(memberships_of(user))


def start(user: User) -> str | None:
    """A fresh session on every sign-in: the old cookie's token is never reused.

    Returns the clinic the session starts in (the user's first)."""
    session.clear()
    token = secrets.token_urlsafe(32)
    clinics = clinics_of(user)
    db.session.add(UserSession(id=new_id(), token_hash=token_hash(token), user_id=user.id,
                               clinic_id=clinics[0] if clinics else None,
                               user_agent=(request.user_agent.string or "")[:300]))
    session["sid"] = token
    session.permanent = True
    return clinics[0] if clinics else None


def end(reason: str) -> None:
    token = session.get("sid")
    if token:
        db.session.execute(update(UserSession).where(
            UserSession.token_hash == token_hash(token), UserSession.ended_at.is_(None))
            .values(ended_at=utcnow(), end_reason=reason))
    session.clear()


def end_all_for(user_id: str, reason: str) -> int:
    result = db.session.execute(update(UserSession).where(
        UserSession.user_id == user_id, UserSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason))
    return result.rowcount or 0


def load(user_id: str) -> Principal | None:
    """The signed-in principal, or None if the session ended, expired or the user was disabled.

    The session row is checked and touched on short connections of its own, before the
    request's transaction starts: on SQLite a POST's transaction holds the write lock, and a
    second connection writing while it is open would wait for it.
    """
    token = session.get("sid")
    if not token:
        return None
    with read_only_intent(), db.engine.connect() as conn:
        row = conn.execute(
            select(UserSession.id, UserSession.user_id, UserSession.ended_at,
                   UserSession.created_at, UserSession.last_seen_at, User.disabled_at)
            .join(User, User.id == UserSession.user_id)
            .where(UserSession.token_hash == token_hash(token))).first()
    if row is None or row.ended_at is not None or row.user_id != user_id:
        return None
    now = utcnow()
    config = current_app.config
    last_seen, created = _aware(row.last_seen_at), _aware(row.created_at)
    expired = None
    if now - last_seen > config["SESSION_IDLE_TIMEOUT"]:
        expired = "idle"
    elif now - created > config["SESSION_ABSOLUTE_TIMEOUT"]:
        expired = "absolute"
    elif row.disabled_at is not None:
        expired = "disabled"
    if expired:
        _write_now(update(UserSession).where(UserSession.id == row.id)
                   .values(ended_at=now, end_reason=expired))
        return None
    if now - last_seen > LAST_SEEN_RESOLUTION:
        _write_now(update(UserSession).where(UserSession.id == row.id).values(last_seen_at=now))
    session_row = db.session.get(UserSession, row.id)
    return Principal(user=session_row.user, session_row=session_row, clinic_id=session_row.clinic_id,
                     roles=roles_at(session_row.user, session_row.clinic_id))


def _aware(moment):
    # Core queries bypass the ORM column type on some drivers; treat stored times as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def switch_clinic(principal: Principal, clinic_id: str) -> bool:
    if clinic_id not in clinics_of(principal.user) or principal.session_row is None:
        return False
    principal.session_row.clinic_id = clinic_id
    return True


def _write_now(statement) -> None:
    # Session bookkeeping commits on its own, whatever the request does after.
    token = set_write_intent(True)
    try:
        with db.engine.begin() as conn:
            conn.execute(statement)
    finally:
        reset_write_intent(token)
