"""Diagnoses: added, and resolved under the version policy."""
from __future__ import annotations

from datetime import date

from app.models import Condition
from app.models.types import utcnow
from app.services.handlers.observations import require_visit_of
from app.services.handlers.registry import handles
from app.services.writes import WriteContext


@handles("condition.add")
def add(ctx: WriteContext):
    data = ctx.mutation.data
    patient_id = ctx.require_patient(data["patient_id"])
    condition = ctx.create(Condition, {
        "patient_id": patient_id, "visit_id": require_visit_of(ctx, data.get("visit_id"), patient_id),
        "text": data["text"].strip(), "code": (data.get("code") or "").strip().upper() or None,
        "onset_date": date.fromisoformat(data["onset_date"]) if data.get("onset_date") else None,
        "clinical_status": "active"}, patient_id=patient_id, clinic_id=ctx.actor.clinic_id)
    return ctx.applied(condition)


@handles("condition.resolve")
def resolve(ctx: WriteContext):
    condition = ctx.load(Condition, ctx.mutation.entity_id, "Diagnosis")
    ctx.require_patient(condition.patient_id)
    stale = ctx.check_base_version(condition, patient_id=condition.patient_id, clinic_id=None,
                                   wanted={"clinical_status": "resolved"})
    if stale:
        return stale
    ctx.update(condition, {"clinical_status": "resolved", "resolved_at": utcnow()},
               patient_id=condition.patient_id, clinic_id=None)
    return ctx.applied(condition)
