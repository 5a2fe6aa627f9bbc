"""Bearer tokens: random, shown once, kept only as a hash."""
from __future__ import annotations

import functools
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app, has_app_context
from sqlalchemy import bindparam, event, select, update
from sqlalchemy.orm import Session

from app.domain import roles
from app.domain.ids import new_id
from app.extensions import db
from app.models import ApiToken, Membership, User
from app.models.types import utcnow
from app.services.writes import kinds_written

PREFIX = "crt_"
LAST_USED_PRECISION = timedelta(minutes=1)
# Every sync request names its token, and a device makes several a minute (a push, then a
# pull): each process keeps the answer this long. A token revoked, an account disabled or
# roles changed through this process count at once; through another worker or app server,
# within this many seconds.
BEARER_KEPT_SECONDS = 5.0
_BEARERS_KEPT_AT_MOST = 10_000
_TOUCHES_BEARERS = (ApiToken, User, Membership)
_clock = time.monotonic


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(user: User, name: str, clinic_id: str | None = None) -> str:
    token = PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiToken(id=new_id(), user_id=user.id, clinic_id=clinic_id, name=name[:100],
                            token_hash=_digest(token)))
    return token


@dataclass(frozen=True)
class Bearer:
    """Who holds a live token: its user, and the user's roles at each of their clinics (in the
    order they joined them)."""
    user_id: str
    username: str
    organization_id: str
    token_clinic_id: str | None
    memberships: dict[str, frozenset[str]]


def authenticate(token: str) -> Bearer | None:
    """The holder of the live token behind this secret, or None; the user must be active.

    One query reads the token, its user and their memberships, and its answer is kept for
    BEARER_KEPT_SECONDS: every sync request asks."""
    if not token.startswith(PREFIX):
        return None
    digest = _digest(token)
    kept = _kept_bearers()
    found = kept.get(digest)
    if found is not None and found[0] > _clock():
        return found[1]
    bearer = _read_bearer(digest)
    if bearer is not None:
        if len(kept) >= _BEARERS_KEPT_AT_MOST:
            kept.clear()
        kept[digest] = (_clock() + BEARER_KEPT_SECONDS, bearer)
    return bearer


def _read_bearer(digest: str) -> Bearer | None:
    rows = db.session.execute(_bearer(), {"token_hash": digest}).all()
    first = rows[0] if rows else None
    if first is None or first.revoked_at is not None or first.disabled_at is not None:
        return None
    now = utcnow()
    # A device syncs every few seconds: writing the time each request would cost an UPDATE
    # per request for a figure read in minutes.
    if first.last_used_at is None or now - first.last_used_at >= LAST_USED_PRECISION:
        db.session.execute(update(ApiToken).where(ApiToken.id == first.token_id)
                           .values(last_used_at=now))
    return Bearer(user_id=first.user_id, username=first.username,
                  organization_id=first.organization_id, token_clinic_id=first.clinic_id,
                  memberships=roles.by_clinic((row.member_of, row.role) for row in rows))


@functools.cache
def _bearer():
    # Built once: every sync request asks it.
    return (select(ApiToken.id.label("token_id"), ApiToken.clinic_id, ApiToken.last_used_at,
                   ApiToken.revoked_at, User.id.label("user_id"), User.username,
                   User.organization_id, User.disabled_at,
                   Membership.clinic_id.label("member_of"), Membership.role)
            .join(User, User.id == ApiToken.user_id)
            .outerjoin(Membership, Membership.user_id == User.id)
            .where(ApiToken.token_hash == bindparam("token_hash"))
            .order_by(Membership.created_at))


def revoke_all_for(user_id: str) -> int:
    """Revoke every live token of the user (after a reset of how they sign in)."""
    result = db.session.execute(update(ApiToken).where(
        ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    forget_bearers()
    return result.rowcount or 0


def _kept_bearers() -> dict:
    """This app's tokens answered lately: hash -> (monotonic time until which it holds, Bearer)."""
    return current_app.extensions.setdefault("bearers_kept", {})


def forget_bearers() -> None:
    """Every token is read again at its next use (after a change to who may use one)."""
    if has_app_context():
        _kept_bearers().clear()


@event.listens_for(Session, "after_flush")
def _note_bearer_changes(session: Session, _context) -> None:
    # Forgotten at the flush and again at the commit: a request reading a token between the
    # two would keep the state from before the change.
    if not kinds_written(session).isdisjoint(_TOUCHES_BEARERS):
        session.info["bearers_changed"] = True
        forget_bearers()


@event.listens_for(Session, "after_commit")
def _forget_changed_bearers(session: Session) -> None:
    if session.info.pop("bearers_changed", False):
        forget_bearers()
