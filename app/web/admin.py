"""Administration console: the organization's clinics, teams, users and roles, its devices,
and the audit log."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import wraps

from flask import Blueprint, abort, current_app, flash, redirect, request, session
from flask_login import current_user
from sqlalchemy import and_, or_, select

from app.contexts import devices
from app.domain import roles as r
from app.extensions import db, limiter
from app.models import AuditEvent, Clinic, User
from app.models.records import to_json_value
from app.models.types import utcnow
from app.services import admin as svc
from app.services import break_glass
from app.services import passkeys, tokens
from app.web import auditing, sessions
from app.web.access import _requires, admin_required, audit_viewer_required
from app.web.rendering import render

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_PAGE_SIZE = 100
console_required = _requires(lambda roles: r.can_administer(roles) or r.can_view_audit(roles))


@bp.get("/")
@console_required
def index_get():
    reviews = (break_glass.open_review_counts(current_user.user.organization_id, utcnow())
               if r.can_review_break_glass(current_user.roles) else None)
    return render("admin/index.html", {"can_administer": r.can_administer(current_user.roles),
                                       "can_view_audit": r.can_view_audit(current_user.roles),
                                       "break_glass_reviews": reviews})


def _parse_day(value: str, end: bool = False) -> datetime | None:
    try:
        day = datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return day.replace(hour=23, minute=59, second=59) if end else day


@bp.get("/audit")
@audit_viewer_required
def audit_get():
    filters = {k: request.args.get(k, "").strip()[:80] for k in ("patient", "user", "action", "from", "to")}
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if filters["patient"]:
        query = query.where(AuditEvent.patient_id == filters["patient"])
    if filters["user"]:
        query = query.where(AuditEvent.username == filters["user"])
    if filters["action"]:
        query = query.where(AuditEvent.action.startswith(filters["action"]))
    if filters["from"] and (start := _parse_day(filters["from"])):
        query = query.where(AuditEvent.at >= start)
    if filters["to"] and (stop := _parse_day(filters["to"], end=True)):
        query = query.where(AuditEvent.at <= stop)
    if r.ORG_ADMIN in current_user.roles:
        # Their whole organization, never another one's: the audit database holds every
        # organization's events (a demo organization can share a deployment).
        org_id = current_user.user.organization_id
        clinic_ids = db.session.execute(select(Clinic.id).where(
            Clinic.organization_id == org_id)).scalars().all()
        user_ids = db.session.execute(select(User.id).where(
            User.organization_id == org_id)).scalars().all()
        query = query.where(or_(AuditEvent.clinic_id.in_(clinic_ids),
                                and_(AuditEvent.clinic_id.is_(None),
                                     AuditEvent.user_id.in_(user_ids))))
    else:
        query = query.where(AuditEvent.clinic_id == current_user.clinic_id)
    before = request.args.get("before", type=int)
    if before:
        query = query.where(AuditEvent.id < before)
    # A short read of its own: on SQLite every audit-database transaction takes the write
    # lock, so reading through db.session would hold it while record() below waits for it.
    with db.engines["audit"].connect() as conn:
        rows = conn.execute(query.limit(AUDIT_PAGE_SIZE + 1)).all()
    events = [{"id": e.id, "at": to_json_value(e.at), "username": e.username, "role": e.role,
               "clinic_id": e.clinic_id, "patient_id": e.patient_id,
               "patient_short": (e.patient_id or "")[:8], "action": e.action,
               "outcome": e.outcome, "device": e.device, "request_id": e.request_id,
               "detail_items": [f"{k}={v}" for k, v in sorted((e.detail or {}).items())]}
              for e in rows[:AUDIT_PAGE_SIZE]]
    auditing.record("audit.view", detail={"filters": filters})
    return render("admin/audit.html", {"filters": filters, "events": events,
                                       "next_before": events[-1]["id"] if len(rows) > AUDIT_PAGE_SIZE else None},
                  fragment="admin/_audit_rows.html")


# --- Users, roles, clinics and teams -------------------------------------------------------
# Views parse the form, call app.services.admin (which checks the scope rules), audit,
# commit and render. Every action leaves an audit event, including refused ones.

ONCE_KEY = "admin_password_once"  # a temporary password, shown on the next page only
USER_FIELDS = ("username", "display_name", "clinic_id", "role", "team_id")
MEMBERSHIP_FIELDS = ("clinic_id", "role", "team_id")
FORM_LIMIT = 300  # longer than any field accepts: validation names the problem


def _form(*names: str) -> dict:
    return {name: request.form.get(name, "").strip()[:FORM_LIMIT] for name in names}


def _scope() -> svc.Scope:
    scope = svc.scope_for(current_user.user.id, current_user.user.organization_id,
                          current_user.clinic_id, current_user.roles)
    if scope is None:
        abort(403)
    return scope


def _refusals(action: str):
    """NotFound answers 404 and Forbidden 403, each audited as a denied attempt."""
    def decorator(view):
        @wraps(view)
        def wrapped(**kwargs):
            try:
                return view(**kwargs)
            except (svc.NotFound, svc.Forbidden) as exc:
                db.session.rollback()
                forbidden = isinstance(exc, svc.Forbidden)
                asked = {name: str(value)[:80] for name, value in kwargs.items()}
                auditing.record(action, outcome="denied",
                                detail={"reason": str(exc) if forbidden else "not_found", **asked})
                abort(403 if forbidden else 404)
        return wrapped
    return decorator


def _rejected(action: str, exc: svc.Invalid, detail: dict) -> None:
    db.session.rollback()
    auditing.record(action, outcome="rejected", detail={**detail, "problems": exc.errors})


def _show_once(user_id: str, password: str) -> None:
    session[ONCE_KEY] = {"user_id": user_id, "password": password}


def _take_once(user_id: str) -> str | None:
    shown = session.pop(ONCE_KEY, None)
    return shown["password"] if shown and shown.get("user_id") == user_id else None


def _user_form(scope: svc.Scope, values: dict, errors: dict, status: int = 200):
    options = svc.form_options(scope)
    if not values.get("clinic_id") and len(options["clinic_options"]) == 1:
        values = {**values, "clinic_id": options["clinic_options"][0]["value"]}
    return render("admin/user_new.html", {"values": values, "errors": errors, **options},
                  status=status)


def _user_page(scope: svc.Scope, user, errors: dict | None = None, values: dict | None = None,
               status: int = 200, membership_id: str | None = None, password: str | None = None):
    person = svc.user_detail(scope, user)
    errors = dict(errors or {})
    if membership_id and "membership" in errors:
        for m in person["memberships"]:
            if m["id"] == membership_id:
                m["error"] = errors.pop("membership")
    values = dict(values or {})
    options = svc.form_options(scope)
    if not values.get("clinic_id") and len(options["clinic_options"]) == 1:
        values["clinic_id"] = options["clinic_options"][0]["value"]
    return render("admin/user.html", {"person": person, "errors": errors, "values": values,
                                      "temporary_password": password, **options}, status=status)


def _clinics_page(scope: svc.Scope, errors: dict | None = None, values: dict | None = None,
                  team_clinic_id: str | None = None, status: int = 200):
    clinics = svc.list_clinics(scope)
    errors = dict(errors or {})
    values = dict(values or {})
    if team_clinic_id:
        for c in clinics:
            if c["id"] == team_clinic_id:
                c["team_error"] = errors.pop("name", None)
                c["team_value"] = values.pop("team_name", "")
    return render("admin/clinics.html", {"clinics": clinics,
                                         "can_create_clinic": svc.may_create_clinic(scope),
                                         "errors": errors, "values": values}, status=status)


def _user_ref(user) -> dict:
    return {"user_id": user.id, "username": user.username}


def _reset_key() -> str:
    return f"admin:{current_user.user.id}"


# One budget per administrator for every way of resetting how someone signs in: a stolen
# administrator session cannot take over many accounts in a burst.
_reset_limit = limiter.shared_limit(lambda: current_app.config["ADMIN_RESET_RATE_LIMIT"],
                                    scope="admin-reset", key_func=_reset_key)


def _sign_out_everywhere(user, reason: str) -> dict:
    """After a reset, nothing signed in the old way may go on working: sessions and tokens."""
    return {"sessions_ended": sessions.end_all_for(user.id, reason),
            "tokens_revoked": tokens.revoke_all_for(user.id)}


@bp.get("/users")
@admin_required
def users_get():
    scope = _scope()
    users = svc.list_users(scope)
    auditing.record("admin.user.list", detail={"count": len(users)})
    return render("admin/users.html", {"users": users})


@bp.get("/users/new")
@admin_required
def users_new_get():
    return _user_form(_scope(), {}, {})


@bp.post("/users")
@admin_required
@_refusals("admin.user.create")
def users_post():
    scope = _scope()
    values = _form(*USER_FIELDS)
    try:
        user, password = svc.create_user(scope, **values)
    except svc.Invalid as exc:
        _rejected("admin.user.create", exc, {"username": values["username"][:80]})
        return _user_form(scope, values, exc.errors, status=422)
    auditing.record("admin.user.create", detail={
        **_user_ref(user), "clinic_id": values["clinic_id"], "role": values["role"],
        "team_id": values["team_id"] or None})
    db.session.commit()
    _show_once(user.id, password)
    flash(f"The account for {user.display_name} is ready. Give them the temporary password "
          "below.", "success")
    return redirect(f"/admin/users/{user.id}", code=303)


@bp.get("/users/<user_id>")
@admin_required
@_refusals("admin.user.read")
def user_get(user_id: str):
    scope = _scope()
    user = svc.get_user(scope, user_id)
    password = _take_once(user.id)
    auditing.record("admin.user.read", detail=_user_ref(user))
    return _user_page(scope, user, password=password)


@bp.post("/users/<user_id>/disable")
@admin_required
@_refusals("admin.user.disable")
def user_disable_post(user_id: str):
    scope = _scope()
    user = svc.get_user(scope, user_id)
    try:
        changed = svc.disable_user(scope, user)
    except svc.Invalid as exc:
        _rejected("admin.user.disable", exc, _user_ref(user))
        return _user_page(scope, user, exc.errors, status=422)
    ended = sessions.end_all_for(user.id, "disabled")
    auditing.record("admin.user.disable", detail={**_user_ref(user), "changed": changed,
                                                  "sessions_ended": ended})
    db.session.commit()
    if changed:
        flash(f"{user.display_name} is disabled and was signed out everywhere. They cannot "
              "sign in until an administrator enables the account again.", "success")
    else:
        flash(f"{user.display_name} was already disabled. Nothing changed.", "info")
    return redirect(f"/admin/users/{user.id}", code=303)


@bp.post("/users/<user_id>/enable")
@admin_required
@_refusals("admin.user.enable")
def user_enable_post(user_id: str):
    scope = _scope()
    user = svc.get_user(scope, user_id)
    changed = svc.enable_user(scope, user)
    auditing.record("admin.user.enable", detail={**_user_ref(user), "changed": changed})
    db.session.commit()
    if changed:
        flash(f"{user.display_name} is enabled and can sign in again.", "success")
    else:
        flash(f"{user.display_name} was already enabled. Nothing changed.", "info")
    return redirect(f"/admin/users/{user.id}", code=303)


def _sign_in_reset(user_id: str, action: str, end_reason: str, reset, confirm):
    """Change how someone signs in, then end everything signed in the old way; audited.
    `reset(scope, user)` makes the change and returns (audit detail, result); `confirm(user,
    result)` tells the administrator once it is committed."""
    scope = _scope()
    user = svc.get_user(scope, user_id)
    try:
        detail, result = reset(scope, user)
    except svc.Invalid as exc:
        _rejected(action, exc, _user_ref(user))
        return _user_page(scope, user, exc.errors, status=422)
    ended = _sign_out_everywhere(user, end_reason)
    auditing.record(action, detail={**_user_ref(user), **detail, **ended})
    db.session.commit()
    confirm(user, result)
    return redirect(f"/admin/users/{user.id}", code=303)


@bp.post("/users/<user_id>/reset-mfa")
@admin_required
@_reset_limit
@_refusals("admin.user.reset_mfa")
def user_reset_mfa_post(user_id: str):
    def reset(scope, user):
        svc.reset_mfa(scope, user)
        # A passkey is a second factor too: left in place, it would skip the new code app.
        return {"passkeys_removed": passkeys.remove_all_of(user.id)}, None

    def confirm(user, _result):
        flash(f"The code app and passkeys of {user.display_name} were reset and they were signed "
              "out. At their next sign-in they will be asked to set up a code app again.",
              "success")
    return _sign_in_reset(user_id, "admin.user.reset_mfa", "mfa_reset", reset, confirm)


@bp.post("/users/<user_id>/password")
@admin_required
@_reset_limit
@_refusals("admin.user.password_reset")
def user_password_post(user_id: str):
    def confirm(user, password):
        _show_once(user.id, password)
        flash(f"{user.display_name} has a new temporary password and was signed out. Their old "
              "password no longer works.", "success")
    return _sign_in_reset(user_id, "admin.user.password_reset", "password_reset",
                          lambda scope, user: ({}, svc.reset_password(scope, user)), confirm)


@bp.post("/users/<user_id>/reset-passkeys")
@admin_required
@_reset_limit
@_refusals("admin.user.reset_passkeys")
def user_reset_passkeys_post(user_id: str):
    def reset(scope, user):
        svc.check_sign_in_reset(scope, user, "reset_passkeys")
        removed = passkeys.remove_all_of(user.id)
        return {"passkeys_removed": removed}, removed

    def confirm(user, removed):
        flash(f"All passkeys of {user.display_name} were removed ({removed}) and they were "
              "signed out. They sign in with their password and code app, and can add new "
              "passkeys under their account.", "success")
    return _sign_in_reset(user_id, "admin.user.reset_passkeys", "passkeys_reset", reset, confirm)


@bp.post("/users/<user_id>/memberships")
@admin_required
@_refusals("admin.membership.add")
def user_memberships_post(user_id: str):
    scope = _scope()
    user = svc.get_user(scope, user_id)
    values = _form(*MEMBERSHIP_FIELDS)
    try:
        membership = svc.add_membership(scope, user, **values)
    except svc.Invalid as exc:
        _rejected("admin.membership.add", exc, {**_user_ref(user), **values})
        return _user_page(scope, user, exc.errors, values, status=422)
    auditing.record("admin.membership.add", detail={
        **_user_ref(user), "membership_id": membership.id, "clinic_id": membership.clinic_id,
        "role": membership.role, "team_id": membership.team_id})
    db.session.commit()
    flash(f"{user.display_name} is now {r.ROLE_LABELS[membership.role]} at "
          f"{membership.clinic.name}.", "success")
    return redirect(f"/admin/users/{user.id}", code=303)


@bp.post("/memberships/<membership_id>/delete")
@admin_required
@_refusals("admin.membership.remove")
def membership_delete_post(membership_id: str):
    scope = _scope()
    membership = svc.get_membership(scope, membership_id)
    user = svc.get_user(scope, membership.user_id)
    described = {**_user_ref(user), "membership_id": membership.id,
                 "clinic_id": membership.clinic_id, "role": membership.role}
    role_label, clinic_name = r.ROLE_LABELS.get(membership.role, membership.role), membership.clinic.name
    try:
        svc.remove_membership(scope, membership)
    except svc.Invalid as exc:
        _rejected("admin.membership.remove", exc, described)
        return _user_page(scope, user, exc.errors, status=422, membership_id=membership_id)
    auditing.record("admin.membership.remove", detail=described)
    db.session.commit()
    flash(f"{user.display_name} is no longer {role_label} at {clinic_name}.", "success")
    return redirect(f"/admin/users/{user.id}", code=303)


@bp.get("/clinics")
@admin_required
def clinics_get():
    scope = _scope()
    page = _clinics_page(scope)
    auditing.record("admin.clinic.list")
    return page


@bp.post("/clinics")
@admin_required
@_refusals("admin.clinic.create")
def clinics_post():
    scope = _scope()
    values = _form("name", "code")
    try:
        clinic = svc.create_clinic(scope, **values)
    except svc.Invalid as exc:
        _rejected("admin.clinic.create", exc, values)
        return _clinics_page(scope, exc.errors, values, status=422)
    auditing.record("admin.clinic.create", detail={"clinic_id": clinic.id, "name": clinic.name,
                                                   "code": clinic.code})
    db.session.commit()
    flash(f"{clinic.name} ({clinic.code}) is created. Add its teams, then give people roles "
          "there from their page under Users.", "success")
    return redirect("/admin/clinics", code=303)


@bp.post("/clinics/<clinic_id>/teams")
@admin_required
@_refusals("admin.team.create")
def clinic_teams_post(clinic_id: str):
    scope = _scope()
    clinic = svc.get_clinic(scope, clinic_id)
    name = _form("name")["name"]
    try:
        team = svc.create_team(scope, clinic, name)
    except svc.Invalid as exc:
        _rejected("admin.team.create", exc, {"clinic_id": clinic.id, "name": name[:200]})
        return _clinics_page(scope, exc.errors, {"team_name": name}, team_clinic_id=clinic.id,
                             status=422)
    auditing.record("admin.team.create", detail={"clinic_id": clinic.id, "team_id": team.id,
                                                 "name": team.name})
    db.session.commit()
    flash(f"The team {team.name} is added to {clinic.name}.", "success")
    return redirect("/admin/clinics", code=303)


# --- Devices -----------------------------------------------------------------------------
# Read-only: what each device last reported, so an administrator can act before data is lost.


@bp.get("/devices")
@admin_required
def devices_get():
    scope = _scope()
    context = devices.devices_context(scope, request.args.get("clinic_id", "").strip()[:80],
                                      utcnow(), devices.RiskLimits.from_config(current_app.config))
    auditing.record("admin.device.list", detail={
        "count": len(context["devices"]), "at_risk": context["at_risk_count"],
        "clinic_id": context["clinic_id"] or None})
    return render("admin/devices.html", context)
