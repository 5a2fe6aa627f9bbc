"""The clinic's review list: edits that could not be merged, each decided by a person."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request
from flask_login import current_user
from sqlalchemy import select

from app.contexts.common import user_names
from app.domain.ids import new_id
from app.extensions import db
from app.models import Conflict, Patient
from app.models.types import utcnow
from app.models.records import to_json_value
from app.models.sealed import open_fields, seal_fields
from app.services.scope import visible_in_clinic
from app.web import auditing
from app.web.access import clinical_required
from app.web.forms import flash_result
from app.web.rendering import render
from app.web.submit import form_mid, submit

bp = Blueprint("conflicts", __name__)
RESOLVABLE = {"patient.update"}  # the others are answered by redoing the action on fresh data


def _visible_conflicts(status: str):
    return (select(Conflict, Patient).join(Patient, Patient.id == Conflict.patient_id)
            .where(visible_in_clinic(current_user.clinic_id), Conflict.status == status))


@bp.get("/conflicts")
@clinical_required
def conflicts_get():
    rows = db.session.execute(_visible_conflicts("open").order_by(Conflict.created_at)).all()
    names = user_names({c.raised_by for c, _ in rows})
    items = [_item(c, p, names) for c, p in rows]
    auditing.record_patient_reads("conflict.list", sorted({i["patient"]["id"] for i in items}))
    return render("conflicts/list.html", {"conflicts": items, "mid": new_id()})


def _values(conflict: Conflict) -> tuple[dict, dict, dict]:
    """The server's, the incoming and the base values, opened (they are stored sealed)."""
    return tuple(open_fields(conflict.entity, conflict.entity_id, values) or {}
                 for values in (conflict.server_values, conflict.incoming_values,
                                conflict.base_values))


def _item(c: Conflict, p: Patient, names: dict) -> dict:
    server, incoming, base = _values(c)
    return {"id": c.id, "entity": c.entity, "mutation_type": c.mutation_type,
            "created_at": to_json_value(c.created_at), "raised_by": names.get(c.raised_by, ""),
            "patient": {"id": p.id, "name": f"{p.given_name} {p.family_name}"},
            "resolvable": c.mutation_type in RESOLVABLE,
            "fields": [{"field": f, "server": server.get(f), "incoming": incoming.get(f),
                        "base": base.get(f)} for f in c.fields]}


@bp.post("/conflicts/<conflict_id>/resolve")
@clinical_required
def conflict_resolve_post(conflict_id: str):
    row = db.session.execute(_visible_conflicts("open").where(Conflict.id == conflict_id)).first()
    if row is None:
        abort(404)
    conflict, patient = row
    choice = request.form.get("choice")
    chosen = {}
    if choice == "incoming" and conflict.mutation_type in RESOLVABLE:
        incoming = _values(conflict)[1]
        chosen = {f: incoming.get(f) for f in conflict.fields}
    elif choice == "edit" and conflict.mutation_type in RESOLVABLE:
        chosen = {f: (request.form.get(f"value_{f}") or "").strip() or None for f in conflict.fields}
    elif choice != "server":
        abort(400)
    current = patient.to_record()
    changes = {f: v for f, v in chosen.items() if current.get(f) != v}
    if changes:
        result = submit("patient.update", "patient", patient.id, changes,
                        mid=form_mid("resolve"), base={f: current.get(f) for f in changes},
                        base_version=patient.version, patient_id=patient.id)
        if result.status != "applied":
            flash_result(result, "")
            return redirect("/conflicts", code=303)
    conflict = db.session.get(Conflict, conflict_id)
    conflict.status = "resolved"
    conflict.resolved_by = current_user.user.id
    conflict.resolved_at = utcnow()
    conflict.resolution = {"choice": choice,
                           "values": seal_fields(conflict.entity, conflict.entity_id, chosen)}
    auditing.record("conflict.resolve", patient_id=patient.id,
                    detail={"conflict_id": conflict.id, "choice": choice})
    db.session.commit()
    flash("Decision recorded. The record shows the chosen values; the others stay in its history.",
          "success")
    return redirect("/conflicts", code=303)
