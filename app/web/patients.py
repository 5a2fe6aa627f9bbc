"""Patient search, registration (with a duplicate check first), chart and demographics."""
from __future__ import annotations

from flask import Blueprint, flash, g, redirect, request, session
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select

from app.contexts.chart import chart_context, history_context
from app.contexts.common import page_fingerprint, patient_summary
from app.contexts.search import query_for_audit, search_context, search_patients
from app.domain.duplicates import LIKELY_DUPLICATE_SCORE, likeness
from app.domain.ids import new_id
from app.domain.mutations import IDENTIFIER_SYSTEMS, SEXES
from app.extensions import db
from app.models import PatientIdentifier
from app.web import auditing
from app.web.access import clinical_required
from app.web.forms import errors_of, flash_result, pick, text, visible_patient_or_404
from app.web.rendering import render
from app.web.submit import form_mid, replayed, submit

bp = Blueprint("patients", __name__)
DEMOGRAPHIC_FORM_FIELDS = ("given_name", "family_name", "sex", "birth_date", "phone", "address")


@bp.get("/patients")
@clinical_required
def patients_get():
    q = request.args.get("q", "").strip()[:100]
    context = search_context(current_user.clinic_id, q)
    auditing.record_patient_reads("patient.search", [p["id"] for p in context["results"]],
                                  detail={"q": query_for_audit(q)})
    return render("patients/search.html", context, fragment="patients/_results.html")


def _registration_form(values: dict, errors: dict, duplicates: list | None = None, status=200):
    return render("patients/new.html", {
        "values": values, "errors": errors, "duplicates": duplicates or [],
        "sexes": list(SEXES), "identifier_systems": list(IDENTIFIER_SYSTEMS), "mid": new_id(),
    }, status=status)


@bp.get("/patients/new")
@clinical_required
def patients_new_get():
    return _registration_form({"given_name": request.args.get("given_name", "")}, {})


def likely_duplicates(candidate: dict) -> list[dict]:
    probes = " ".join(filter(None, [candidate.get("family_name")]))
    pool = {p.id: p for p in search_patients(current_user.clinic_id, probes, limit=200)} if probes else {}
    if candidate.get("phone"):
        for p in search_patients(current_user.clinic_id, candidate["phone"], limit=50):
            pool[p.id] = p
    for ident in candidate.get("identifiers") or []:
        for p in search_patients(current_user.clinic_id, ident["value"], limit=10):
            pool[p.id] = p
    scored = []
    for patient in pool.values():
        record = patient.to_record()
        score, reasons = likeness(candidate, record)
        if score >= LIKELY_DUPLICATE_SCORE:
            scored.append({**patient_summary(record), "score": round(score, 2), "reasons": reasons})
    return sorted(scored, key=lambda d: -d["score"])[:5]


@bp.post("/patients/new")
@clinical_required
def patients_new_post():
    data = pick("given_name", "family_name", "sex", "birth_date", "phone", "address",
                required=("given_name", "family_name", "sex", "birth_date"))
    data["clinic_id"] = current_user.clinic_id
    if text("identifier_value"):
        data["identifiers"] = [{"system": text("identifier_system") or "other",
                                "value": text("identifier_value")}]
    values = {**data, "identifier_system": text("identifier_system"),
              "identifier_value": text("identifier_value")}
    earlier = replayed(form_mid())
    if earlier is not None and earlier.ok:
        return redirect(f"/patients/{earlier.entity_id}", code=303)
    if request.form.get("confirm_new") != "yes":
        duplicates = likely_duplicates(data)
        if duplicates:
            auditing.record_patient_reads("patient.duplicate_check", [d["id"] for d in duplicates])
            return _registration_form(values, {}, duplicates, status=409)
    patient_id = form_mid("entity")
    result = submit("patient.register", "patient", patient_id, data, patient_id=patient_id)
    if not result.ok:
        return _registration_form(values, errors_of(result), status=422)
    flash(f"{data['given_name']} {data['family_name']} is registered.", "success")
    return redirect(f"/patients/{result.entity_id}", code=303)


@bp.get("/patients/<patient_id>")
@clinical_required
def patient_get(patient_id: str):
    patient = visible_patient_or_404(patient_id, offer_break_glass=True)
    context = chart_context(patient, current_user.roles, current_user.clinic_id)
    # Who looks, where, in which session (the forms' CSRF token), is part of what is shown.
    generate_csrf()  # the session's token, made now if this is its first page, not at render
    fingerprint = page_fingerprint({**context, "viewer": [current_user.user.id, current_user.clinic_id,
                                                          session.get("csrf_token")]})
    if request.args.get("since") == fingerprint and not g.get("break_glass_banner"):
        # An open chart asking again after a change elsewhere in the clinic: nothing new is
        # shown. Under break-glass every view is recorded, as the banner says.
        return "", 204
    auditing.record("patient.read", patient_id=patient.id)
    return render("patients/chart.html", {**context, "fingerprint": fingerprint, "mid": new_id()},
                  fragment="patients/_chart.html")


@bp.get("/patients/<patient_id>/history")
@clinical_required
def patient_history_get(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    auditing.record("patient.read", patient_id=patient.id, detail={"page": "history"})
    return render("patients/history.html", history_context(patient))


@bp.get("/patients/<patient_id>/edit")
@clinical_required
def patient_edit_get(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    record = patient.to_record()
    auditing.record("patient.read", patient_id=patient.id, detail={"page": "edit"})
    return render("patients/edit.html", {"patient": patient_summary(record), "values": record,
                                         "base": record, "errors": {}, "sexes": list(SEXES),
                                         "mid": new_id()})


@bp.post("/patients/<patient_id>/edit")
@clinical_required
def patient_edit_post(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    base = {f: request.form.get(f"base_{f}") or None for f in DEMOGRAPHIC_FORM_FIELDS}
    values = {f: text(f) for f in DEMOGRAPHIC_FORM_FIELDS}
    changed = {f: v for f, v in values.items() if v != base[f]}
    if not changed:
        flash("Nothing was changed.", "info")
        return redirect(f"/patients/{patient.id}", code=303)
    result = submit("patient.update", "patient", patient.id, changed, base=base,
                    base_version=int(request.form.get("base_version") or 0) or None,
                    patient_id=patient.id)
    if result.status == "rejected":
        return render("patients/edit.html", {
            "patient": patient_summary(patient.to_record()), "values": values, "base": base,
            "errors": errors_of(result), "sexes": list(SEXES), "mid": new_id()}, status=422)
    if result.status == "conflict":
        fields = ", ".join(f.replace("_", " ") for f in result.conflict["fields"])
        flash(f"Someone else changed {fields} while you were editing. Their value is kept and "
              "yours waits on the review list, so nothing is lost.", "warning")
    else:
        flash("Details saved.", "success")
    return redirect(f"/patients/{patient.id}", code=303)


@bp.post("/patients/<patient_id>/identifiers")
@clinical_required
def patient_identifiers_post(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    data = {"patient_id": patient.id, **pick("system", "value", required=("system", "value"))}
    result = submit("patient.identifier.add", "patient_identifier", form_mid("entity"), data,
                    patient_id=patient.id)
    flash_result(result, "Identifier added.")
    return redirect(f"/patients/{patient.id}#identifiers", code=303)


@bp.post("/patients/<patient_id>/identifiers/<identifier_id>/retire")
@clinical_required
def patient_identifier_retire_post(patient_id: str, identifier_id: str):
    patient = visible_patient_or_404(patient_id)
    identifier = db.session.execute(select(PatientIdentifier).where(
        PatientIdentifier.id == identifier_id,
        PatientIdentifier.patient_id == patient.id)).scalar_one_or_none()
    if identifier is None:
        flash("That identifier was not found.", "warning")
        return redirect(f"/patients/{patient.id}", code=303)
    result = submit("patient.identifier.retire", "patient_identifier", identifier.id,
                    pick("reason"), base_version=identifier.version, patient_id=patient.id)
    flash_result(result, "Identifier retired. It stays in the record's history.")
    return redirect(f"/patients/{patient.id}#identifiers", code=303)
