"""Bearer tokens: random, shown once, kept only as a hash."""
from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import joinedload

from app.domain.ids import new_id
from app.extensions import db
from app.models import ApiToken, User
from app.models.types import utcnow

PREFIX = "crt_"
LAST_USED_PRECISION = timedelta(minutes=1)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(user: User, name: str, clinic_id: str | None = None) -> str:
    token = PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiToken(id=new_id(), user_id=user.id, clinic_id=clinic_id, name=name[:100],
                            token_hash=_digest(token)))
    return token


def authenticate(token: str) -> ApiToken | None:
    """The live token behind this secret, or None; its user must still be active."""
    if not token.startswith(PREFIX):
        return None
    row = db.session.execute(_by_hash(), {"token_hash": _digest(token)}).scalar_one_or_none()
    if row is None or row.revoked_at is not None or row.user.is_disabled:
        return None
    now = utcnow()
    # A device syncs every few seconds: writing the time each request would cost an UPDATE
    # per request for a figure read in minutes.
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
        row.last_used_at = now
    return row


@functools.cache
def _by_hash():
    # Built once: every sync request asks it.
    return (select(ApiToken).options(joinedload(ApiToken.user))
            .where(ApiToken.token_hash == bindparam("token_hash")))


def revoke_all_for(user_id: str) -> int:
    """Revoke every live token of the user (after a reset of how they sign in)."""
    result = db.session.execute(update(ApiToken).where(
        ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    return result.rowcount or 0
