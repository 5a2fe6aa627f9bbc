"""Passwords, one-time codes and lockout: the checks behind signing in."""
from __future__ import annotations

import hmac
import time
from datetime import timedelta

import pyotp
from flask import current_app
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.models import User
from app.models.types import utcnow

TOTP_STEP_S = 30
TOTP_DRIFT_STEPS = 1  # accept the neighbouring codes: tablet clocks drift
# A hash to check against when the username is unknown, so both paths take equal time.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def find_user(username: str) -> User | None:
    return db.session.execute(
        select(User).where(func.lower(User.username) == username.strip().lower())
    ).scalar_one_or_none()


def is_locked(user: User) -> bool:
    return user.locked_until is not None and user.locked_until > utcnow()


def check_password(user: User | None, password: str) -> bool:
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return False
    return check_password_hash(user.password_hash, password)


def note_failure(user: User) -> None:
    user.failed_sign_ins = (user.failed_sign_ins or 0) + 1
    if user.failed_sign_ins >= current_app.config["ACCOUNT_LOCKOUT_FAILURES"]:
        user.locked_until = utcnow() + timedelta(minutes=current_app.config["ACCOUNT_LOCKOUT_MINUTES"])
        user.failed_sign_ins = 0


def note_success(user: User) -> None:
    user.failed_sign_ins = 0
    user.locked_until = None


def use_fresh_code(user: User, code: str) -> str | None:
    """Take a code of the user's own code app for an action that needs one now (a step-up):
    None when it is right and unused (it is used up), else why not: "locked" or "bad_code".
    Wrong codes count towards the same pause as at sign-in: guessing here is the same attack."""
    if is_locked(user):
        return "locked"
    step = verify_totp(user.totp_secret, code, user.totp_last_step) if user.totp_secret else None
    if step is None:
        note_failure(user)
        return "bad_code"
    user.totp_last_step = step
    note_success(user)
    return None


def verify_totp(user_secret: str, code: str, last_step: int | None, now: float | None = None) -> int | None:
    """The time step the code belongs to, or None. A step at or before last_step is refused."""
    code = "".join(ch for ch in code if ch.isdigit())
    if len(code) != 6:
        return None
    totp = pyotp.TOTP(user_secret)
    current = int((now if now is not None else time.time()) // TOTP_STEP_S)
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * TOTP_STEP_S), code):
            return step
    return None


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(user: User, secret: str, issuer: str = "Clinic record") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=issuer)
