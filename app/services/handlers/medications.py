"""Medication orders, and dispensing, which only the server may grant (authoritative)."""
from __future__ import annotations

from app.models import MedicationDispense, MedicationRequest
from app.services.handlers.observations import require_visit_of
from app.services.handlers.registry import handles
from app.services.results import Rejection
from app.services.writes import WriteContext


@handles("medication.order")
def order(ctx: WriteContext):
    data = ctx.mutation.data
    patient_id = ctx.require_patient(data["patient_id"])
    request = ctx.create(MedicationRequest, {
        "patient_id": patient_id, "visit_id": require_visit_of(ctx, data.get("visit_id"), patient_id),
        "medication": data["medication"].strip(), "dose": data["dose"].strip(),
        "route": data["route"], "frequency": data["frequency"].strip(),
        "duration_days": data.get("duration_days"), "quantity": data["quantity"],
        "quantity_dispensed": 0, "status": "active"},
        patient_id=patient_id, clinic_id=ctx.actor.clinic_id)
    return ctx.applied(request)


@handles("medication.dispense")
def dispense(ctx: WriteContext):
    data = ctx.mutation.data
    # Locking the order serialises concurrent dispenses, so two pharmacists cannot
    # together hand out more than was ordered.
    request = ctx.load(MedicationRequest, data["request_id"], "Medication order")
    ctx.require_patient(request.patient_id)
    if request.status != "active":
        raise Rejection("request_not_active", f"This order is {request.status}; nothing was dispensed.")
    remaining = request.quantity - request.quantity_dispensed
    if data["quantity"] > remaining:
        message = (f"Only {remaining} of {request.quantity} remain on this order; "
                   f"{data['quantity']} cannot be dispensed.")
        raise Rejection("exceeds_remaining", message, [{"field": "quantity", "message": message}])
    dispensed = ctx.create(MedicationDispense, {
        "request_id": request.id, "patient_id": request.patient_id, "quantity": data["quantity"]},
        patient_id=request.patient_id, clinic_id=ctx.actor.clinic_id)
    total = request.quantity_dispensed + data["quantity"]
    ctx.update(request, {"quantity_dispensed": total,
                         "status": "completed" if total >= request.quantity else "active"},
               patient_id=request.patient_id, clinic_id=ctx.actor.clinic_id)
    return ctx.applied(dispensed)
