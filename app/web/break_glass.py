"""Break-glass pages: a clinician opens a patient outside their clinic in an emergency, and
the privacy officer reviews each opening.

Server pages only: the service worker never holds these patients (DESIGN.md §6, and
docs/decisions.md "Break-glass is a server page").
"""
from __future__ import annotations

from flask import Blueprint, abort, flash, g, make_response, redirect, request
from flask_login import current_user

from app.contexts.search import query_for_audit
from app.domain import roles as r
from app.extensions import db
from app.models.records import to_json_value
from app.models.types import utcnow
from app.services import break_glass as svc
from app.services.scope import patient_visible
from app.web import auditing
from app.web.access import _requires
from app.web.filters import format_time
from app.web.rendering import render

bp = Blueprint("break_glass", __name__)
break_glass_required = _requires(r.can_break_glass)
review_required = _requires(r.can_review_break_glass)

# The pages a grant opens. It lets the clinician read the record, not change it: a write would
# go through apply(), whose scope is the clinic's and is shared with sync.
READ_ENDPOINTS = frozenset({"patients.patient_get", "patients.patient_history_get",
                            "clinical.visit_get"})
FIELD_LIMIT = 2000


@bp.before_app_request
def _forget_grants():
    # Grants are looked up once per request. `g` is fresh per request when each request has
    # its own app context; one held across requests (as the tests do) would keep the last
    # request's answer.
    g.pop("break_glass_banner", None)
    g.pop(auditing.BREAK_GLASS_CACHE, None)


def grant_in_use(patient_id: str):
    """The signed-in clinician's running grant for a patient outside their clinic, for this
    page; None when there is none. A write, or a form page, under a grant is refused here."""
    grant = auditing.running_grants().get(patient_id)
    if grant is None:
        return None
    if request.endpoint not in READ_ENDPOINTS or request.method not in ("GET", "HEAD"):
        abort(make_response(render("error.html", {
            "title": "Read only", "status": 403,
            "text": "Emergency access lets you read this patient's record but not change it, so "
                    "nothing was changed. Ask the patient's own clinic to record the care."},
            status=403)))
    until = format_time(to_json_value(grant.expires_at))
    g.break_glass_banner = {"category": "warning",
                            "text": f"Emergency access until {until} — every view is recorded."}
    return grant


def refused_page(patient_id: str, values: dict | None = None, errors: dict | None = None,
                 status: int = 404):
    """The chart's refusal, offering emergency access. The same page whether or not such a
    patient exists: nothing is told about a record before a reason and a code are given."""
    return make_response(render("break_glass/refused.html", {
        "patient_id": patient_id, "values": values or {}, "errors": errors or {},
        "minutes": svc.limits().minutes}, status=status))


def _form(name: str) -> str:
    return request.form.get(name, "").strip()[:FIELD_LIMIT]


def _checked() -> str:
    """The reason, after the reason and a fresh code were checked; Refused otherwise.

    A missing reason is answered before the code is looked at, so the code is not used up
    by a form that has to be sent again anyway."""
    reason = svc.check_reason(_form("reason"))
    svc.check_code(current_user.user, _form("code"))
    return reason


def _refusal(exc: svc.Refused, patient_id: str | None, detail: dict) -> None:
    auditing.record("break_glass.open", outcome="denied",
                    detail={"problem": exc.problem, **detail,
                            **({"patient_ref": patient_id} if patient_id else {})})
    db.session.commit()  # keeps the used code and the failure count


def _open(patient, reason: str, via: str):
    if patient_visible(patient.id, current_user.clinic_id):
        db.session.commit()  # the code is used up all the same
        flash("This patient is already one of your clinic's: no emergency access is needed.",
              "info")
        return redirect(f"/patients/{patient.id}", code=303)
    grant = svc.open_grant(current_user.user, current_user.clinic_id, patient, reason, utcnow(),
                           svc.limits())
    auditing.record("break_glass.open", patient_id=patient.id, break_glass_id=grant.id,
                    detail={"reason": reason, "via": via,
                            "expires_at": to_json_value(grant.expires_at)})
    db.session.commit()
    flash(f"Emergency access is open until {format_time(to_json_value(grant.expires_at))}. "
          "Your reason and every page you open are recorded and reviewed.", "warning")
    return redirect(f"/patients/{patient.id}", code=303)


@bp.post("/patients/<patient_id>/break-glass")
@break_glass_required
def patient_break_glass_post(patient_id: str):
    values = {"reason": _form("reason")}
    try:
        reason = _checked()
    except svc.Refused as exc:
        _refusal(exc, patient_id, {"via": "chart"})
        # 403, not 422: the record stays closed, as for any refused access to it.
        return refused_page(patient_id, values, exc.errors, status=403)
    patient = svc.patient_in_organization(patient_id, current_user.user.organization_id)
    if patient is None:
        _refusal(svc.Refused({}, "not_found"), patient_id, {"via": "chart"})
        return refused_page(patient_id, values, {"_form": (
            "There is no patient at this address in your organization, so nothing was opened. "
            "Look the patient up by an identifier instead.")})
    return _open(patient, reason, "chart")


def _lookup_page(values: dict, errors: dict, status: int = 200):
    return render("break_glass/lookup.html", {"values": values, "errors": errors,
                                               "minutes": svc.limits().minutes}, status=status)


@bp.get("/break-glass")
@break_glass_required
def break_glass_get():
    return _lookup_page({"identifier": request.args.get("identifier", "").strip()[:100]}, {})


@bp.post("/break-glass")
@break_glass_required
def break_glass_post():
    values = {"identifier": _form("identifier")[:100], "reason": _form("reason")}
    # As patient search does: the log names a national id by its blind index, never in clear.
    detail = {"via": "identifier", "identifier": query_for_audit(values["identifier"])}
    if not values["identifier"]:
        return _lookup_page(values, {"identifier": "Enter the patient's identifier, e.g. a "
                                                   "national ID or MRN."}, status=422)
    try:
        reason = _checked()
    except svc.Refused as exc:
        _refusal(exc, None, detail)
        return _lookup_page(values, exc.errors, status=403)
    found = svc.patients_with_identifier(values["identifier"], current_user.user.organization_id)
    if len(found) != 1:
        problem = "not_found" if not found else "ambiguous"
        _refusal(svc.Refused({}, problem), None, detail)
        message = ("No patient in your organization has this identifier, so nothing was opened. "
                   "Check it with the patient or their papers and try again."
                   if not found else
                   "More than one patient has this identifier, so nothing was opened. Ask the "
                   "patient's clinic for their record, or use a more specific identifier.")
        return _lookup_page(values, {"_form": message}, status=404)
    return _open(found[0], reason, "identifier")


# --- Review by the privacy officer -----------------------------------------------------------


@bp.get("/admin/break-glass")
@review_required
def admin_break_glass_get():
    queue = svc.review_queue(current_user.user.organization_id, utcnow())
    auditing.record("break_glass.queue.view", detail={
        "past_due": len(queue["past_due"]), "open": len(queue["open"])})
    return render("admin/break_glass.html", queue)


def _grant_page(grant, errors: dict | None = None, values: dict | None = None, status: int = 200):
    now = utcnow()
    item = svc.summary(grant, now, svc.tagged_counts([grant.id]))
    events = [{"id": e.id, "at": to_json_value(e.at), "username": e.username, "action": e.action,
               "outcome": e.outcome, "detail_items": [f"{k}={v}" for k, v in
                                                      sorted((e.detail or {}).items())]}
              for e in svc.tagged_events(grant.id)]
    return render("admin/break_glass_grant.html", {
        "grant": item, "events": events, "events_limit": svc.TAGGED_EVENTS_SHOWN,
        "dispositions": [{"value": k, "label": v} for k, v in svc.DISPOSITIONS.items()],
        "errors": errors or {}, "values": values or {}}, status=status)


def _reviewable(grant_id: str):
    grant = svc.grant_for_review(grant_id, current_user.user.organization_id)
    if grant is None:
        auditing.record("break_glass.review", outcome="denied",
                        detail={"problem": "not_found", "grant_ref": grant_id[:80]})
        abort(404)
    return grant


@bp.get("/admin/break-glass/<grant_id>")
@review_required
def admin_break_glass_grant_get(grant_id: str):
    grant = _reviewable(grant_id)
    page = _grant_page(grant)
    auditing.record("break_glass.review.view", patient_id=grant.patient_id,
                    break_glass_id=grant.id)
    return page


@bp.post("/admin/break-glass/<grant_id>/review")
@review_required
def admin_break_glass_review_post(grant_id: str):
    grant = _reviewable(grant_id)
    values = {"disposition": _form("disposition")[:40], "note": _form("note")}
    try:
        svc.record_review(grant, current_user.user, values["disposition"], values["note"],
                          utcnow())
    except svc.Refused as exc:
        db.session.rollback()
        auditing.record("break_glass.review", outcome="rejected", patient_id=grant.patient_id,
                        break_glass_id=grant.id, detail={"problem": exc.problem})
        return _grant_page(grant, exc.errors, values,
                           status=409 if exc.problem == "already_reviewed" else 422)
    auditing.record("break_glass.review", patient_id=grant.patient_id, break_glass_id=grant.id,
                    detail={"disposition": grant.disposition, "note": grant.review_note})
    db.session.commit()
    flash(f"Review recorded: {svc.DISPOSITIONS[grant.disposition].lower()}. It has left the "
          "list of open reviews.", "success")
    return redirect("/admin/break-glass", code=303)
