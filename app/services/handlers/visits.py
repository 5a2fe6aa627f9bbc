"""Visits and their movement between stations."""
from __future__ import annotations

from app.models import Visit
from app.models.types import utcnow
from app.services.handlers.registry import handles
from app.services.writes import WriteContext


@handles("visit.start")
def start(ctx: WriteContext):
    data = ctx.mutation.data
    clinic_id = ctx.require_own_clinic(data["clinic_id"])
    patient_id = ctx.require_patient(data["patient_id"])
    now = utcnow()
    visit = ctx.create(Visit, {
        "patient_id": patient_id, "clinic_id": clinic_id, "station": data["station"],
        "status": "in-progress", "reason": (data.get("reason") or "").strip() or None,
        "started_at": now, "station_since": now}, patient_id=patient_id, clinic_id=clinic_id)
    return ctx.applied(visit)


@handles("visit.move")
def move(ctx: WriteContext):
    visit = ctx.load(Visit, ctx.mutation.entity_id, "Visit")
    ctx.require_patient(visit.patient_id)
    ctx.require_own_clinic(visit.clinic_id)  # each clinic runs its own stations
    station = ctx.mutation.data["station"]
    stale = ctx.check_base_version(visit, patient_id=visit.patient_id, clinic_id=visit.clinic_id,
                                   wanted={"station": station})
    if stale:
        return stale
    now = utcnow()
    finished = station == "done"
    ctx.update(visit, {"station": station, "station_since": now,
                       "status": "finished" if finished else "in-progress",
                       "ended_at": now if finished else None},
               patient_id=visit.patient_id, clinic_id=visit.clinic_id)
    return ctx.applied(visit)
