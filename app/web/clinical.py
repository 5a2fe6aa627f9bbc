"""Forms for the clinical writes of a visit: each builds a mutation and calls apply()."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request
from flask_login import current_user

from app.contexts.chart import chart_context
from app.contexts.common import patient_summary
from app.domain.ids import new_id
from app.domain.mutations import CONSENT_SCOPES, ROUTES, SIGNER_RELATIONS
from app.domain.stations import STATION_LABELS, STATIONS
from app.domain.vitals import VITALS
from app.extensions import db
from app.models import Appointment, Condition, MedicationRequest, Note, Visit
from app.models.types import utcnow
from app.models.records import to_json_value
from app.services.results import Mutation
from app.web import auditing
from app.web.access import clinical_required
from app.web.forms import (errors_of, flash_result, integer, number, pick, text,
                           visible_patient_or_404)
from app.web.redirects import local_path
from app.web.rendering import render
from app.web.submit import form_mid, submit, submit_many

bp = Blueprint("clinical", __name__)


def _chart(patient_id: str, anchor: str = ""):
    return redirect(f"/patients/{patient_id}{anchor}", code=303)


def _form(template: str, patient, values: dict, errors: dict, status: int = 200, **extra):
    auditing.record("patient.read", patient_id=patient.id, detail={"page": template})
    return render(template, {"patient": patient_summary(patient.to_record()), "values": values,
                             "errors": errors, "mid": new_id(), **extra}, status=status)


def _owned(model, entity_id: str):
    """A record of a patient this clinic may see, or 404 (the same answer as 'does not exist')."""
    row = db.session.get(model, entity_id)
    if row is None:
        abort(404)
    visible_patient_or_404(row.patient_id)
    return row


def _open_visit_id(patient_id: str) -> str | None:
    # The newest, as the chart shows it (and as the service worker picks it).
    visit = db.session.query(Visit).filter_by(patient_id=patient_id, status="in-progress",
                                              clinic_id=current_user.clinic_id) \
        .order_by(Visit.started_at.desc(), Visit.id.desc()).first()
    return visit.id if visit else None


# Visits -------------------------------------------------------------------------------------

@bp.post("/patients/<patient_id>/visits")
@clinical_required
def patient_visits_post(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    station = text("station") or "registration"
    result = submit("visit.start", "visit", form_mid("entity"), {
        "patient_id": patient.id, "clinic_id": current_user.clinic_id, "station": station,
        **({"reason": text("reason")} if text("reason") else {})}, patient_id=patient.id)
    flash_result(result, f"Visit started at {STATION_LABELS.get(station, station)}.")
    return _chart(patient.id)


@bp.get("/visits/<visit_id>")
@clinical_required
def visit_get(visit_id: str):
    visit = _owned(Visit, visit_id)
    chart = chart_context(visit.patient, current_user.roles, current_user.clinic_id)
    auditing.record("patient.read", patient_id=visit.patient_id, detail={"visit_id": visit.id})
    this_visit = next(v for v in chart["visits"] if v["id"] == visit.id)
    return render("visits/visit.html", {**chart, "visit": this_visit, "mid": new_id(),
                                        "visit_observations": [o for o in chart["observations"]
                                                               if o["visit_id"] == visit.id]})


@bp.post("/visits/<visit_id>/move")
@clinical_required
def visit_move_post(visit_id: str):
    visit = _owned(Visit, visit_id)
    station = text("station")
    if station not in STATIONS:
        flash("Choose a station to send the patient to.", "error")
        return redirect(f"/visits/{visit.id}", code=303)
    result = submit("visit.move", "visit", visit.id, {"station": station},
                    base_version=integer("base_version"), patient_id=visit.patient_id)
    name = f"{visit.patient.given_name} {visit.patient.family_name}"
    flash_result(result, f"{name} sent to {STATION_LABELS[station]}.")
    return redirect(local_path(text("next"), f"/visits/{visit.id}"), code=303)


# Vitals -------------------------------------------------------------------------------------

@bp.get("/patients/<patient_id>/vitals")
@clinical_required
def patient_vitals_get(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    return _form("clinical/vitals.html", patient, {}, {}, vitals=_vital_fields())


def _vital_fields() -> list[dict]:
    return [{"field": v.field, "label": v.label, "unit": v.unit, "code": v.code,
             "min": v.minimum, "max": v.maximum, "step": v.step} for v in VITALS]


@bp.post("/patients/<patient_id>/vitals")
@clinical_required
def patient_vitals_post(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    effective_at = to_json_value(utcnow())
    visit_id = _open_visit_id(patient.id)
    mutations, fields = [], []
    for vital in VITALS:
        value = number(vital.field)
        if value is None:
            continue
        data = {"patient_id": patient.id, "code": vital.code, "value": value, "unit": vital.unit,
                "effective_at": effective_at}
        if visit_id:
            data["visit_id"] = visit_id
        mutations.append(Mutation(mid=form_mid(vital.code), type="observation.record",
                                  entity="observation", entity_id=form_mid("id-" + vital.code),
                                  data=data))
        fields.append(vital.field)
    values = {v.field: request.form.get(v.field, "") for v in VITALS}
    if not mutations:
        return _form("clinical/vitals.html", patient, values,
                     {"_form": "Enter at least one reading."}, 422, vitals=_vital_fields())
    results = submit_many(mutations, patient_id=patient.id)
    if any(r.status == "rejected" for r in results):
        errors = {}
        for field, result in zip(fields, results):
            if result.status == "rejected":
                errors[field] = result.error["message"]
        return _form("clinical/vitals.html", patient, values, errors, 422, vitals=_vital_fields())
    flash(f"{len(results)} reading{'s' if len(results) > 1 else ''} recorded.", "success")
    return _chart(patient.id, "#vitals")


# Diagnoses ----------------------------------------------------------------------------------

@bp.get("/patients/<patient_id>/conditions")
@clinical_required
def patient_conditions_get(patient_id: str):
    return _form("clinical/condition.html", visible_patient_or_404(patient_id), {}, {})


@bp.post("/patients/<patient_id>/conditions")
@clinical_required
def patient_conditions_post(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    data = {"patient_id": patient.id, **pick("text", "code", "onset_date", required=("text",))}
    if visit_id := _open_visit_id(patient.id):
        data["visit_id"] = visit_id
    result = submit("condition.add", "condition", form_mid("entity"), data, patient_id=patient.id)
    if result.status == "rejected":
        return _form("clinical/condition.html", patient, data, errors_of(result), 422)
    flash("Diagnosis added.", "success")
    return _chart(patient.id, "#conditions")


@bp.post("/conditions/<condition_id>/resolve")
@clinical_required
def condition_resolve_post(condition_id: str):
    condition = _owned(Condition, condition_id)
    result = submit("condition.resolve", "condition", condition.id, {},
                    base_version=integer("base_version"), patient_id=condition.patient_id)
    flash_result(result, "Diagnosis marked resolved.")
    return _chart(condition.patient_id, "#conditions")


# Notes --------------------------------------------------------------------------------------

@bp.get("/patients/<patient_id>/notes")
@clinical_required
def patient_notes_get(patient_id: str):
    return _form("clinical/note.html", visible_patient_or_404(patient_id), {}, {}, note=None)


@bp.post("/patients/<patient_id>/notes")
@clinical_required
def patient_notes_post(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    data = {"patient_id": patient.id, **pick("text", required=("text",))}
    if visit_id := _open_visit_id(patient.id):
        data["visit_id"] = visit_id
    note_id = form_mid("note-id")
    mutations = [Mutation(mid=form_mid("write"), type="note.write", entity="note",
                          entity_id=note_id, data=data)]
    if request.form.get("sign") == "yes":
        mutations.append(Mutation(mid=form_mid("sign"), type="note.sign", entity="note",
                                  entity_id=note_id, data={}, base_version=1))
    results = submit_many(mutations, patient_id=patient.id)
    if any(r.status == "rejected" for r in results):
        return _form("clinical/note.html", patient, data, errors_of(*results), 422, note=None)
    flash("Note signed." if len(results) == 2 else "Note saved as a draft.", "success")
    return _chart(patient.id, "#notes")


@bp.get("/notes/<note_id>/edit")
@clinical_required
def note_edit_get(note_id: str):
    note = _owned(Note, note_id)
    return _form("clinical/note.html", note.patient, {"text": note.text}, {},
                 note=note.to_record())


@bp.post("/notes/<note_id>/edit")
@clinical_required
def note_edit_post(note_id: str):
    note = _owned(Note, note_id)
    data = pick("text", required=("text",))
    result = submit("note.edit", "note", note.id, data, base={"text": request.form.get("base_text", "")},
                    base_version=integer("base_version"), patient_id=note.patient_id)
    if result.status == "rejected":
        return _form("clinical/note.html", note.patient, data, errors_of(result), 422,
                     note=note.to_record())
    flash_result(result, "Draft saved.")
    return _chart(note.patient_id, "#notes")


@bp.post("/notes/<note_id>/sign")
@clinical_required
def note_sign_post(note_id: str):
    note = _owned(Note, note_id)
    result = submit("note.sign", "note", note.id, {}, base_version=integer("base_version"),
                    patient_id=note.patient_id)
    flash_result(result, "Note signed. From now on it can only be amended.")
    return _chart(note.patient_id, "#notes")


@bp.get("/notes/<note_id>/amend")
@clinical_required
def note_amend_get(note_id: str):
    note = _owned(Note, note_id)
    return _form("clinical/amend.html", note.patient, {}, {}, note=note.to_record())


@bp.post("/notes/<note_id>/amend")
@clinical_required
def note_amend_post(note_id: str):
    note = _owned(Note, note_id)
    data = {"note_id": note.id, **pick("text", required=("text",))}
    result = submit("note.amend", "note_addendum", form_mid("entity"), data, patient_id=note.patient_id)
    if result.status == "rejected":
        return _form("clinical/amend.html", note.patient, data, errors_of(result), 422,
                     note=note.to_record())
    flash("Amendment added to the signed note.", "success")
    return _chart(note.patient_id, "#notes")


# Medications --------------------------------------------------------------------------------

@bp.get("/patients/<patient_id>/medications")
@clinical_required
def patient_medications_get(patient_id: str):
    return _form("clinical/medication.html", visible_patient_or_404(patient_id), {}, {},
                 routes=list(ROUTES))


@bp.post("/patients/<patient_id>/medications")
@clinical_required
def patient_medications_post(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    data = {"patient_id": patient.id,
            **pick("medication", "dose", "route", "frequency",
                   required=("medication", "dose", "route", "frequency")),
            "quantity": integer("quantity") if text("quantity") else ""}
    if text("duration_days"):
        data["duration_days"] = integer("duration_days")
    if visit_id := _open_visit_id(patient.id):
        data["visit_id"] = visit_id
    result = submit("medication.order", "medication_request", form_mid("entity"), data, patient_id=patient.id)
    if result.status == "rejected":
        return _form("clinical/medication.html", patient, data, errors_of(result), 422,
                     routes=list(ROUTES))
    flash("Medication ordered.", "success")
    return _chart(patient.id, "#medications")


@bp.post("/medications/<request_id>/dispense")
@clinical_required
def medication_dispense_post(request_id: str):
    order = _owned(MedicationRequest, request_id)
    result = submit("medication.dispense", "medication_dispense", form_mid("entity"),
                    {"request_id": order.id, "quantity": integer("quantity") or ""},
                    patient_id=order.patient_id)
    flash_result(result, "Dispensed.")
    return _chart(order.patient_id, "#medications")


# Appointments -------------------------------------------------------------------------------

@bp.get("/patients/<patient_id>/appointments")
@clinical_required
def patient_appointments_get(patient_id: str):
    return _form("clinical/appointment.html", visible_patient_or_404(patient_id), {}, {})


@bp.post("/patients/<patient_id>/appointments")
@clinical_required
def patient_appointments_post(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    # The tablet's picker gives local wall time; the browser adds its UTC offset as tz_offset.
    local = text("starts_at") or ""
    starts_at = _with_offset(local, text("tz_offset"))
    data = {"patient_id": patient.id, "clinic_id": current_user.clinic_id, "starts_at": starts_at,
            **pick("reason")}
    result = submit("appointment.book", "appointment", form_mid("entity"), data, patient_id=patient.id)
    if result.status == "rejected":
        return _form("clinical/appointment.html", patient, {**data, "starts_at": local},
                     errors_of(result), 422)
    flash("Appointment booked.", "success")
    return _chart(patient.id, "#appointments")


def _with_offset(local: str, offset: str | None) -> str:
    if not local:
        return ""
    if len(local) == 16:
        local += ":00"
    return local + (offset if offset and len(offset) == 6 else "Z")


@bp.post("/appointments/<appointment_id>/cancel")
@clinical_required
def appointment_cancel_post(appointment_id: str):
    appointment = _owned(Appointment, appointment_id)
    result = submit("appointment.cancel", "appointment", appointment.id, pick("reason"),
                    base_version=integer("base_version"), patient_id=appointment.patient_id)
    flash_result(result, "Appointment cancelled.")
    return _chart(appointment.patient_id, "#appointments")


# Consents -----------------------------------------------------------------------------------

@bp.get("/patients/<patient_id>/consents")
@clinical_required
def patient_consents_get(patient_id: str):
    return _form("clinical/consent.html", visible_patient_or_404(patient_id), {}, {},
                 scopes=list(CONSENT_SCOPES), relations=list(SIGNER_RELATIONS))


@bp.post("/patients/<patient_id>/consents")
@clinical_required
def patient_consents_post(patient_id: str):
    patient = visible_patient_or_404(patient_id)
    data = {"patient_id": patient.id,
            **pick("scope", "signer_name", "signer_relation", "signature_png",
                   required=("scope", "signer_name", "signer_relation", "signature_png"))}
    if visit_id := _open_visit_id(patient.id):
        data["visit_id"] = visit_id
    result = submit("consent.record", "consent", form_mid("entity"), data, patient_id=patient.id)
    if result.status == "rejected":
        return _form("clinical/consent.html", patient, {**data, "signature_png": ""},
                     errors_of(result), 422, scopes=list(CONSENT_SCOPES),
                     relations=list(SIGNER_RELATIONS))
    flash("Consent recorded.", "success")
    return _chart(patient.id, "#consents")
