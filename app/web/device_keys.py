"""What a device needs from the server to keep a person's records encrypted (DESIGN.md §6):
a check of the password it is about to lock them under, and the opening of queued changes
escrowed to the server when the key that encrypts them there is gone."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask_login import current_user
from sqlalchemy import select

from app.crypto.outbox_escrow import EnvelopeError, current_escrow_keys
from app.domain.ids import is_uuid
from app.extensions import db, limiter
from app.models import MutationResult
from app.services.accounts import check_password
from app.web import auditing
from app.web.access import clinical_required

bp = Blueprint("device_keys", __name__)

# A device's queue rarely holds more than a few hundred changes; this bounds one request.
RECOVERY_PARTS_MAX = 5000


def _per_person() -> str:
    return f"person:{current_user.user.id}"


@bp.post("/app/device-secret")
@clinical_required
# Per person, not per address: a stolen session must not become a way to guess the password
# from many places, and a clinic behind one address must not share one budget.
@limiter.limit(lambda: current_app.config["DEVICE_SECRET_RATE_LIMIT"], key_func=_per_person)
def device_secret_post():
    """A device is about to lock this person's records under their password. It is checked
    here first, so a typo can never lock records away for good."""
    body = request.get_json(silent=True)
    password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(password, str) or not check_password(current_user.user, password):
        auditing.record("device.unlock_secret", outcome="failure")
        return jsonify(error="wrong_password",
                       message="That is not your password. Nothing was changed on this device."), 422
    auditing.record("device.unlock_secret")
    return "", 204


@bp.post("/app/outbox-recovery")
@clinical_required
@limiter.limit(lambda: current_app.config["DEVICE_RECOVERY_RATE_LIMIT"])
def outbox_recovery_post():
    """Open the escrowed copies of changes this person queued on a device whose key for
    them is gone (a forgotten password, or too many wrong ones). Only their author can have
    them opened: each envelope is bound to its author and its mid. The device encrypts them
    under its new key and sends them the ordinary way, in their original order."""
    body = request.get_json(silent=True)
    parts = body.get("parts") if isinstance(body, dict) else None
    if isinstance(parts, list) and len(parts) > RECOVERY_PARTS_MAX:
        return jsonify(error="too_many", message=f"Send at most {RECOVERY_PARTS_MAX} changes "
                       "at a time. Nothing was opened."), 413
    if not isinstance(parts, list) or not parts or not all(
            isinstance(p, dict) and is_uuid(p.get("mid")) and isinstance(p.get("escrow"), dict)
            for p in parts):
        return jsonify(error="invalid", message="Send the escrowed changes as a list of "
                       "{mid, escrow}. Nothing was opened."), 400
    keys, author = current_escrow_keys(), str(current_user.user.id)
    opened, refused = {}, []
    for part in parts:
        try:
            opened[part["mid"]] = keys.open(part["escrow"], author, part["mid"])
        except EnvelopeError:
            refused.append(part["mid"])
    # A change the server already refused stays refused; the device shows why again.
    answered = db.session.scalars(select(MutationResult).where(
        MutationResult.mid.in_(list(opened)), MutationResult.user_id == current_user.user.id,
        MutationResult.status == "rejected")).all()
    auditing.record("device.outbox_recovered", outcome="success" if not refused else "partial",
                    detail={"opened": len(opened), "refused": len(refused)})
    return jsonify(opened=opened, refused=refused,
                   rejected={r.mid: _reason(r) for r in answered})


def _reason(result: MutationResult) -> dict:
    # A refusal's reason is never sensitive (it names a rule, not a value), so it is stored
    # in the clear.
    error = result.result.get("error") if isinstance(result.result, dict) else None
    return error if isinstance(error, dict) else {"code": "rejected",
                                                  "message": "The server refused this change."}
