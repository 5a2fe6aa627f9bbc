"""Who is syncing: a browser session (with its CSRF header) or a bearer token."""
from __future__ import annotations

from flask import current_app, g, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError

from app.domain import roles as role_rules
from app.extensions import csrf
from app.services import tokens
from app.services.actor import Actor
from sync_api.errors import SyncError


def current_actor() -> Actor:
    """The authenticated actor for this request, or a SyncError (401/403) that applies nothing."""
    client_id = request.headers.get("X-Client-Id")
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _unauthenticated("Use 'Authorization: Bearer <token>'. Nothing was applied.")
        bearer = tokens.authenticate(secret.strip())
        if bearer is None:
            raise _unauthenticated("This token is not valid, was revoked or belongs to a "
                                   "disabled account. Nothing was applied.")
        memberships = bearer.memberships
        clinic_id = (bearer.token_clinic_id if bearer.token_clinic_id in memberships
                     else next(iter(memberships), None))
        return Actor(user_id=bearer.user_id, username=bearer.username,
                     organization_id=bearer.organization_id, clinic_id=clinic_id,
                     roles=memberships.get(clinic_id, frozenset()), client_id=client_id,
                     request_id=g.get("request_id"))
    if not current_user.is_authenticated:
        raise _unauthenticated("Your session has ended. Sign in again; nothing was applied and "
                               "everything on the device is kept.")
    if request.method == "POST" and current_app.config.get("WTF_CSRF_ENABLED", True):
        try:
            csrf.protect()
        except CSRFError:
            raise SyncError(403, "csrf_failed", "The request lacked a valid X-CSRFToken header. "
                            "Nothing was applied; reload the page and try again.") from None
    return current_user.actor(request_id=g.get("request_id"), client_id=client_id)


def _unauthenticated(message: str) -> SyncError:
    # A 401 names the scheme that would work (RFC 9110); Bearer never opens a browser dialog.
    return SyncError(401, "unauthenticated", message,
                     headers={"WWW-Authenticate": 'Bearer realm="sync"'})


def require_clinical(actor: Actor) -> None:
    if not actor.clinic_id or not role_rules.can_read_patients(actor.roles):
        raise SyncError(403, "forbidden", "Your role at this clinic does not sync patient "
                        "records. Nothing was applied.")
