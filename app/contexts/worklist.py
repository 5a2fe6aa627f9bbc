"""A station's worklist: the clinic's visits waiting there, oldest first."""
from __future__ import annotations

from sqlalchemy import select

from app.domain.stations import ACTIVE_STATIONS, STATION_LABELS, next_stations
from app.extensions import db
from app.models import Patient, Visit
from app.contexts.common import fingerprint_of, patient_summary


def worklist_context(clinic_id: str, station: str) -> dict:
    rows = db.session.execute(
        select(Visit, Patient).join(Patient, Patient.id == Visit.patient_id)
        .where(Visit.clinic_id == clinic_id, Visit.station == station,
               Visit.status == "in-progress")
        .order_by(Visit.station_since, Visit.id)).all()
    fingerprint = fingerprint_of("|".join(f"{v.id}:{v.version}:{p.version}" for v, p in rows))
    return {
        "fingerprint": fingerprint,
        "station": station, "station_label": STATION_LABELS[station],
        "stations": [{"key": s, "label": STATION_LABELS[s]} for s in ACTIVE_STATIONS],
        "visits": [{**visit.to_record(), "patient": patient_summary(patient.to_record()),
                    "moves": [{"station": s, "label": STATION_LABELS[s]}
                              for s in next_stations(visit.station)]}
                   for visit, patient in rows],
    }
