"""Observations (vitals and results): appended, never edited."""
from __future__ import annotations

from app.domain.validation import parse_datetime
from app.domain.vitals import plausibility_problem
from app.models import Observation
from app.models.types import utcnow
from app.services.handlers.registry import handles
from app.services.results import Rejection
from app.services.writes import WriteContext

FUTURE_TOLERANCE_S = 300  # device clocks drift; a reading minutes "ahead" is still a reading


def require_visit_of(ctx: WriteContext, visit_id: str | None, patient_id: str) -> str | None:
    if not visit_id:
        return None
    if ctx.patient_of_visit(visit_id) != patient_id:
        raise Rejection("invalid", "That visit belongs to another patient.",
                        [{"field": "visit_id", "message": "That visit belongs to another patient."}])
    return visit_id


@handles("observation.record")
def record(ctx: WriteContext):
    data = ctx.mutation.data
    patient_id = ctx.require_patient(data["patient_id"])
    problem = plausibility_problem(data["code"], data["value"], data["unit"])
    if problem:
        raise Rejection("implausible_value", problem, [{"field": "value", "message": problem}])
    effective_at = parse_datetime(data["effective_at"])
    if (effective_at - utcnow()).total_seconds() > FUTURE_TOLERANCE_S:
        message = "The time taken is in the future."
        raise Rejection("invalid", message, [{"field": "effective_at", "message": message}])
    value = data["value"]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    # Readings are only ever added: nothing in a push reads one back.
    observation = ctx.append(Observation, {
        "patient_id": patient_id, "visit_id": require_visit_of(ctx, data.get("visit_id"), patient_id),
        "code": data["code"], "value_number": float(value) if is_number else None,
        "value_text": None if is_number else str(value), "unit": data["unit"],
        "effective_at": effective_at}, patient_id=patient_id, clinic_id=ctx.actor.clinic_id)
    return ctx.applied(observation)
