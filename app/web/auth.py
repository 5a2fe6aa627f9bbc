"""Signing in (password, then a one-time code; or a passkey), enrolling a code app, signing out."""
from __future__ import annotations

import io

import qrcode
import qrcode.image.svg
from flask import Blueprint, current_app, flash, redirect, request, session
from flask_login import current_user, login_user, logout_user

from app.extensions import db, limiter
from app.models import User
from app.models.types import utcnow
from app.services import accounts, passkeys
from app.web import auditing, sessions
from app.web import passkey_requests as pk
from app.web.redirects import local_path
from app.web.rendering import render

bp = Blueprint("auth", __name__)
PENDING_MFA_SECONDS = 300


def _sign_in_limit():
    return current_app.config["SIGN_IN_RATE_LIMIT"]


def _safe_next(target: str | None) -> str:
    return local_path(target)


def _pending_user() -> User | None:
    pending = session.get("pending_mfa")
    if not pending or utcnow().timestamp() - pending["at"] > PENDING_MFA_SECONDS:
        return None
    user = db.session.get(User, pending["user_id"])
    return user if user and not user.is_disabled else None


@bp.get("/login")
def login_get():
    if current_user.is_authenticated:
        return redirect("/")
    return render("auth/login.html", {"error": None, "username": "",
                                      "next": _safe_next(request.args.get("next"))})


@bp.post("/login")
@limiter.limit(_sign_in_limit)
def login_post():
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    next_url = _safe_next(request.form.get("next"))
    user = accounts.find_user(username) if username else None

    def refuse(message: str, reason: str):
        auditing.audit.append([auditing.audit.AuditEntry(
            action="sign_in", outcome="denied", user_id=user.id if user else None,
            username=username[:80], detail={"reason": reason, "ip": request.remote_addr})])
        db.session.commit()
        return render("auth/login.html", {"error": message, "username": username,
                                          "next": next_url}, status=401)

    if user is not None and accounts.is_locked(user):
        return refuse("Too many failed attempts: this account is paused for a few minutes. "
                      "Try again later or ask an administrator.", "locked")
    if not accounts.check_password(user, password) or user.is_disabled:
        if user is not None:
            accounts.note_failure(user)
        return refuse("The username or password is not right. Check them and try again.",
                      "bad_credentials")
    session.clear()
    session["pending_mfa"] = {"user_id": user.id, "at": utcnow().timestamp(), "next": next_url}
    # Every role here touches patient data or who may, so every account uses a second factor.
    return redirect("/login/code" if user.totp_secret else "/login/setup")


@bp.get("/login/code")
def login_code_get():
    if _pending_user() is None:
        return redirect("/login")
    return render("auth/code.html", {"error": None})


@bp.post("/login/code")
@limiter.limit(_sign_in_limit)
def login_code_post():
    user = _pending_user()
    if user is None or not user.totp_secret:
        flash("Your sign-in took too long. Enter your password again.", "warning")
        return redirect("/login")
    if accounts.is_locked(user):
        session.clear()
        return redirect("/login")
    step = accounts.verify_totp(user.totp_secret, request.form.get("code", ""), user.totp_last_step)
    if step is None:
        accounts.note_failure(user)
        auditing.audit.append([auditing.audit.AuditEntry(
            action="sign_in", outcome="denied", user_id=user.id, username=user.username,
            detail={"reason": "bad_code", "ip": request.remote_addr})])
        db.session.commit()
        return render("auth/code.html", {"error": "That code is not right or was already used. "
                                         "Wait for the next code and try again."}, status=401)
    user.totp_last_step = step
    return redirect(_complete_sign_in(user))


@bp.get("/login/setup")
def login_setup_get():
    user = _pending_user()
    if user is None:
        return redirect("/login")
    if user.totp_secret:
        return redirect("/login/code")
    secret = session.get("setup_secret") or accounts.new_totp_secret()
    session["setup_secret"] = secret
    uri = accounts.provisioning_uri(user, secret)
    svg = io.BytesIO()
    qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage).save(svg)
    return render("auth/setup.html", {"secret": secret, "qr_svg": svg.getvalue().decode(),
                                      "error": None})


@bp.post("/login/setup")
@limiter.limit(_sign_in_limit)
def login_setup_post():
    user = _pending_user()
    secret = session.get("setup_secret")
    if user is None or not secret or user.totp_secret:
        return redirect("/login")
    step = accounts.verify_totp(secret, request.form.get("code", ""), None)
    if step is None:
        return render("auth/setup.html", {"secret": secret, "qr_svg": None,
                                          "error": "That code is not right. Check the time on "
                                          "your phone and enter the newest code."}, status=401)
    user.totp_secret = secret
    user.totp_last_step = step
    return redirect(_complete_sign_in(user))


# A passkey with user verification is both factors at once: it replaces password and code.
@bp.post("/login/passkey/options")
@limiter.limit(pk.passkey_limit)
@pk.with_relying_party
def login_passkey_options_post(rp):
    body = pk.json_body()
    username = str(body.get("username") or "")[:80]
    salt = passkeys.prf_salt_for_username(username, current_app.config["SECRET_KEY"])
    options, challenge = passkeys.sign_in_options(rp, salt)
    pk.remember_challenge(passkeys.SIGN_IN, challenge, None, username=username,
                          next=_safe_next(str(body.get("next") or "")))
    db.session.commit()
    return pk.answer(**options)


@bp.post("/login/passkey")
@limiter.limit(pk.passkey_limit)
@pk.with_relying_party
def login_passkey_post(rp):
    credential = pk.json_body().get("credential")
    challenge, kept = pk.take_remembered(passkeys.SIGN_IN, None)
    username = kept.get("username", "")
    typed = accounts.find_user(username) if username else None
    user = None

    def refuse(message: str, reason: str, status: int = 400):
        auditing.audit.append([auditing.audit.AuditEntry(
            action="sign_in", outcome="denied", user_id=user.id if user else None,
            username=user.username if user else username[:80] or None,
            detail={"reason": reason, "method": "passkey", "ip": request.remote_addr})])
        db.session.commit()
        return pk.refusal(message, status=status)

    if challenge is None or not isinstance(credential, dict):
        return refuse(passkeys.MESSAGES["challenge"], "challenge")
    try:
        passkey = passkeys.authenticate(rp, credential, challenge, expected_user=typed)
    except passkeys.PasskeyRefused as refused:
        user = refused.credential.user if refused.credential else None
        if user is not None and refused.reason in ("user_not_verified", "sign_count", "invalid"):
            accounts.note_failure(user)
        return refuse(refused.message, refused.reason)
    user = passkey.user
    if accounts.is_locked(user):
        return refuse("Too many failed attempts: this account is paused for a few minutes. "
                      "Try again later or ask an administrator.", "locked")
    if user.is_disabled:
        return refuse("This account is disabled. Ask an administrator.", "disabled")
    target = _complete_sign_in(user, method="passkey", next_url=kept.get("next"),
                               detail={"passkey_id": passkey.id})
    return pk.answer(ok=True, redirect=target, user_id=user.id,
                     credential_id=passkey.credential_id)


def _complete_sign_in(user: User, method: str = "password_totp", next_url: str | None = None,
                      detail: dict | None = None) -> str:
    """Every way of signing in ends here: a new session, the success audited. Returns where
    the person goes next."""
    if next_url is None:
        next_url = session.get("pending_mfa", {}).get("next", "/")
    accounts.note_success(user)
    clinic_id = sessions.start(user)
    login_user(sessions.Principal(user=user, session_row=None, clinic_id=clinic_id,
                                  roles=sessions.roles_at(user, clinic_id)))
    auditing.audit.append([auditing.audit.AuditEntry(
        action="sign_in", outcome="success", user_id=user.id, username=user.username,
        detail={"ip": request.remote_addr, "method": method, **(detail or {})})])
    db.session.commit()
    return _safe_next(next_url)


@bp.post("/logout")
def logout_post():
    if current_user.is_authenticated:
        auditing.record("sign_out")
        sessions.end("logout")
        logout_user()
        db.session.commit()
    flash("You are signed out.", "info")
    return redirect("/login")


@bp.post("/session/clinic")
def session_clinic_post():
    if not current_user.is_authenticated:
        return redirect("/login")
    if not sessions.switch_clinic(current_user, request.form.get("clinic_id", "")):
        flash("You have no role at that clinic.", "warning")
    else:
        auditing.record("switch_clinic", detail={"clinic_id": request.form.get("clinic_id")})
        db.session.commit()
    return redirect("/")
