"""What the passkey routes (signing in, account settings) share: the relying party for this
request, the challenge remembered in the session, the JSON they read and answer, limits."""
from __future__ import annotations

import functools
from urllib.parse import urlsplit

from flask import current_app, jsonify, request, session
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from app.models.types import utcnow
from app.services.passkeys import CHALLENGE_SECONDS, RelyingParty

SESSION_KEY = "webauthn"
NOT_SET_UP = ("Passkeys are not set up on this server. Use your password and code; an "
              "administrator can turn passkeys on.")


def passkey_limit() -> str:
    return current_app.config["PASSKEY_RATE_LIMIT"]


def relying_party() -> RelyingParty | None:
    """From WEBAUTHN_RP_ID / WEBAUTHN_ORIGIN; in development, from the request's own address.

    None in production without them: the Host header is the client's to choose, and the
    relying party decides which site a passkey belongs to.
    """
    config = current_app.config
    rp_id, origin = config.get("WEBAUTHN_RP_ID"), config.get("WEBAUTHN_ORIGIN")
    if rp_id and origin:
        return RelyingParty(rp_id, origin.rstrip("/"))
    if config["APP_ENV"] == "production":
        return None
    here = urlsplit(request.host_url)
    return RelyingParty(rp_id or here.hostname or "localhost",
                        (origin or f"{here.scheme}://{here.netloc}").rstrip("/"))


def with_relying_party(view):
    """The route gets the relying party as its first argument; while passkeys are not set up
    on this server it answers 409 instead."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        rp = relying_party()
        if rp is None:
            return refusal(NOT_SET_UP, status=409)
        return view(rp, *args, **kwargs)
    return wrapped


def remember_challenge(purpose: str, challenge: bytes, user_id: str | None, **extra) -> None:
    session[SESSION_KEY] = {"purpose": purpose, "challenge": bytes_to_base64url(challenge),
                            "user_id": user_id, "at": utcnow().timestamp(), **extra}


def take_remembered(purpose: str, user_id: str | None) -> tuple[bytes | None, dict]:
    """The challenge this browser was given for `purpose`, forgotten as it is read."""
    kept = session.pop(SESSION_KEY, None) or {}
    fresh = utcnow().timestamp() - kept.get("at", 0) <= CHALLENGE_SECONDS
    if kept.get("purpose") != purpose or kept.get("user_id") != user_id or not fresh:
        return None, {}
    return base64url_to_bytes(kept["challenge"]), kept


def json_body() -> dict:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def answer(status: int = 200, **fields):
    return jsonify(fields), status


def refusal(message: str, status: int = 400, **fields):
    return jsonify({"ok": False, "message": message, **fields}), status
