"""The patient chart: everything about one patient this clinic may see."""
from __future__ import annotations

from sqlalchemy import select

from app.domain.stations import STATION_LABELS, next_stations
from app.domain.vitals import VITALS, VITALS_BY_CODE
from app.extensions import db
from app.models import (Appointment, Clinic, Condition, Consent, EntityHistory, MedicationRequest,
                        Note, Observation, Patient, Visit)
from app.contexts.common import allowed_types, patient_summary, user_names

TREND_WIDTH, TREND_HEIGHT, TREND_POINTS = 120, 32, 12


def trend_points(values: list[float]) -> str:
    """An SVG polyline for the last readings, oldest on the left."""
    values = values[-TREND_POINTS:]
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = TREND_WIDTH / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{TREND_HEIGHT - 2 - (v - low) / span * (TREND_HEIGHT - 4):.1f}"
                    for i, v in enumerate(values))


def _vitals(observations: list[Observation]) -> list[dict]:
    by_code: dict[str, list[Observation]] = {}
    for obs in observations:
        if obs.code in VITALS_BY_CODE and obs.value_number is not None:
            by_code.setdefault(obs.code, []).append(obs)
    rows = []
    for vital in VITALS:
        series = sorted(by_code.get(vital.code, []), key=lambda o: (o.effective_at, o.id))
        if not series:
            continue
        latest = series[-1]
        rows.append({"code": vital.code, "label": vital.label, "unit": vital.unit,
                     "value": latest.value_number, "effective_at": latest.to_record()["effective_at"],
                     "count": len(series),
                     "trend": trend_points([o.value_number for o in series])})
    return rows


def history_context(patient: Patient) -> dict:
    """The demographics' changes, newest first. Kept on the server: devices hold only the
    current record, so the chart links here instead of showing it."""
    return {"patient": patient_summary(patient.to_record()), "history": _history(patient)}


def _history(patient: Patient) -> list[dict]:
    rows = db.session.execute(select(EntityHistory).where(
        EntityHistory.entity == "patient", EntityHistory.entity_id == patient.id)
        .order_by(EntityHistory.version.desc())).scalars().all()
    names = user_names({r.changed_by for r in rows})
    history, newer = [], None
    for row in rows:  # newest first: each entry says what changed from the version before it
        # Only clear demographic fields are compared: the sealed identifiers stay sealed.
        record = row.record
        history.append({"version": row.version, "changed_at": record.get("updated_at"),
                        "changed_by": names.get(row.changed_by, ""), "record": record,
                        "changes": []})
        if newer is not None:
            newer["changes"] = [{"field": f, "from": record.get(f), "to": newer["record"].get(f)}
                                for f in Patient.DEMOGRAPHIC_FIELDS
                                if record.get(f) != newer["record"].get(f)]
        newer = history[-1]
    return [h for h in history if h["changes"] or h["version"] == 1]


def chart_context(patient: Patient, roles: frozenset[str], clinic_id: str | None) -> dict:
    pid = patient.id
    def rows(model, *order):
        # The id breaks ties, so the service worker's twin lists records in the same order.
        return list(db.session.execute(select(model).where(model.patient_id == pid)
                                       .order_by(*order, model.id.desc())).scalars())
    visits = rows(Visit, Visit.started_at.desc())
    observations = rows(Observation, Observation.effective_at.desc())
    conditions = rows(Condition, Condition.created_at.desc())
    notes = rows(Note, Note.created_at.desc())
    medications = rows(MedicationRequest, MedicationRequest.created_at.desc())
    appointments = rows(Appointment, Appointment.starts_at.desc())
    consents = rows(Consent, Consent.signed_at.desc())
    names = user_names({n.created_by for n in notes} | {n.signed_by for n in notes}
                       | {a.created_by for n in notes for a in n.addenda}
                       | {m.created_by for m in medications})
    clinics = {c.id: c.name for c in db.session.execute(select(Clinic)).scalars()}
    record = patient.to_record()

    def visit_dict(v: Visit) -> dict:
        return {**v.to_record(), "station_label": STATION_LABELS[v.station],
                "clinic_name": clinics.get(v.clinic_id, ""),
                "moves": [{"station": s, "label": STATION_LABELS[s]} for s in next_stations(v.station)]}

    def note_dict(n: Note) -> dict:
        return {**n.to_record(), "author": names.get(n.created_by, ""),
                "signer": names.get(n.signed_by, ""),
                "addenda": [{**a.to_record(), "author": names.get(a.created_by, "")} for a in n.addenda]}

    return {
        "patient": {**patient_summary(record), "address": record.get("address"),
                    "clinic_name": clinics.get(patient.clinic_id, ""),
                    "created_at": record["created_at"], "updated_at": record["updated_at"]},
        # Only a visit at this clinic can be moved from here; others show in the visit list.
        "open_visit": next((visit_dict(v) for v in visits
                            if v.status == "in-progress" and v.clinic_id == clinic_id), None),
        "visits": [visit_dict(v) for v in visits],
        "vitals": _vitals(observations),
        "observations": [{**o.to_record(),
                          "label": VITALS_BY_CODE[o.code].label if o.code in VITALS_BY_CODE else o.code}
                         for o in observations[:50]],
        "conditions": [c.to_record() for c in conditions],
        "notes": [note_dict(n) for n in notes],
        "medications": [{**m.to_record(), "prescriber": names.get(m.created_by, ""),
                         "remaining": m.quantity - m.quantity_dispensed} for m in medications],
        "appointments": [a.to_record() for a in appointments],
        "consents": [c.to_record() for c in consents],
        "can": allowed_types(roles),
    }
