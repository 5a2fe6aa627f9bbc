"""Home and the station worklists, which refresh themselves while open."""
from __future__ import annotations

from flask import Blueprint, abort, redirect, request
from flask_login import current_user, login_required

from app.contexts.worklist import worklist_context
from app.domain import roles as r
from app.domain.ids import new_id
from app.domain.stations import ACTIVE_STATIONS
from app.web import auditing
from app.web.access import clinical_required
from app.web.rendering import render

bp = Blueprint("worklist", __name__)


@bp.get("/")
@login_required
def home_get():
    station = r.home_station(current_user.roles)
    if station:
        return redirect(f"/worklist/{station}")
    if r.can_administer(current_user.roles) or r.can_view_audit(current_user.roles):
        return redirect("/admin/")
    return render("error.html", {"title": "No role at this clinic", "status": 403,
                                 "text": "Your account has no role here yet. Ask an administrator "
                                         "to add one."}, status=403)


@bp.get("/worklist/<station>")
@clinical_required
def worklist_get(station: str):
    if station not in ACTIVE_STATIONS:
        abort(404)
    context = worklist_context(current_user.clinic_id, station)
    if request.args.get("since") == context["fingerprint"]:
        # Unchanged since the page last looked: no patient data leaves, nothing to swap.
        return "", 204
    auditing.record_patient_reads("worklist.read", [v["patient_id"] for v in context["visits"]],
                                  detail={"station": station})
    return render("worklist/station.html", {**context, "mid": new_id()},
                  fragment="worklist/_visits.html")
