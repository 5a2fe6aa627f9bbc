"""A person's own account settings: their passkeys (list, add, remove)."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, flash, redirect, request
from flask_login import current_user, login_required

from app.extensions import db, limiter
from app.models.records import to_json_value
from app.models.types import utcnow
from app.services import accounts, passkeys
from app.web import auditing
from app.web import passkey_requests as pk
from app.web.rendering import render

bp = Blueprint("account", __name__)
NEED_CODE = ("For your safety, changing your passkeys needs a recent sign-in. Enter the code "
             "from your code app, or sign out and in again. Nothing was changed.")
BAD_CODE = ("That code is not right or was already used. Nothing was changed. Wait for the "
            "next code and try again.")
LOCKED = ("Too many wrong codes: your account is paused for a few minutes. Nothing was changed. "
          "Try again later or ask an administrator.")


def _recently_signed_in() -> bool:
    row = current_user.session_row
    window = timedelta(minutes=current_app.config["PASSKEY_RECENT_SIGN_IN_MINUTES"])
    return row is not None and utcnow() - row.created_at <= window


def _confirm_recent(code: str) -> str | None:
    """None when the person may change their passkeys now; else what to tell them.

    A session that is not recent may be someone else's at an unattended tablet: a fresh code
    from the code app (usable once) shows the person is still the one holding it.
    """
    if _recently_signed_in():
        return None
    if not code.strip():
        return NEED_CODE
    problem = accounts.use_fresh_code(current_user.user, code)
    if problem == "locked":
        return LOCKED
    return BAD_CODE if problem else None


def _page(error: str | None = None, status: int = 200):
    user = current_user.user
    rows = [{"id": p.id, "name": p.name, "created_at": to_json_value(p.created_at),
             "last_used_at": to_json_value(p.last_used_at)} for p in passkeys.passkeys_of(user)]
    return render("account/index.html", {
        "passkeys": rows, "error": error, "needs_code": not _recently_signed_in(),
        "passkeys_available": pk.relying_party() is not None,
        "recent_minutes": current_app.config["PASSKEY_RECENT_SIGN_IN_MINUTES"]}, status=status)


@bp.get("/account")
@login_required
def account_get():
    return _page()


@bp.post("/account/passkeys/options")
@login_required
@limiter.limit(pk.passkey_limit)
@pk.with_relying_party
def account_passkeys_options_post(rp):
    body = pk.json_body()
    if problem := _confirm_recent(str(body.get("code") or "")):
        db.session.commit()  # a used or failed code is remembered
        return pk.refusal(problem, status=422)
    user = current_user.user
    options, challenge = passkeys.registration_options(rp, user)
    pk.remember_challenge(passkeys.REGISTER, challenge, user.id,
                          name=passkeys.clean_name(str(body.get("name") or "")))
    db.session.commit()
    return pk.answer(**options, user_id=user.id)


@bp.post("/account/passkeys")
@login_required
@limiter.limit(pk.passkey_limit)
@pk.with_relying_party
def account_passkeys_post(rp):
    user = current_user.user
    credential = pk.json_body().get("credential")
    challenge, kept = pk.take_remembered(passkeys.REGISTER, user.id)
    try:
        if challenge is None or not isinstance(credential, dict):
            raise passkeys.PasskeyRefused("challenge", passkeys.MESSAGES["challenge"])
        passkey = passkeys.register(rp, user, credential, challenge, kept.get("name", ""))
    except passkeys.PasskeyRefused as refused:
        auditing.record("account.passkey.add", outcome="denied",
                        detail={"reason": refused.reason})
        db.session.commit()
        return pk.refusal(refused.message)
    auditing.record("account.passkey.add", detail={"passkey_id": passkey.id,
                                                   "name": passkey.name})
    db.session.commit()
    flash(f"The passkey “{passkey.name}” is added. You can sign in with it from the sign-in "
          "page.", "success")
    return pk.answer(ok=True, redirect="/account", user_id=user.id,
                     credential_id=passkey.credential_id, passkey_id=passkey.id)


@bp.post("/account/passkeys/remove")
@login_required
@limiter.limit(pk.passkey_limit)
def account_passkeys_remove_post():
    passkey = passkeys.get_own(current_user.user, request.form.get("passkey_id", "")[:64])
    if passkey is None:
        flash("That passkey was already removed. Nothing else was changed.", "info")
        return redirect("/account", code=303)
    if problem := _confirm_recent(request.form.get("code", "")):
        auditing.record("account.passkey.remove", outcome="denied",
                        detail={"passkey_id": passkey.id, "reason": "not_recent"})
        db.session.commit()
        return _page(error=problem, status=422)
    described = {"passkey_id": passkey.id, "name": passkey.name}
    passkeys.remove(passkey)
    auditing.record("account.passkey.remove", detail=described)
    db.session.commit()
    flash(f"The passkey “{described['name']}” is removed and can no longer sign in as you.",
          "success")
    return redirect("/account", code=303)
