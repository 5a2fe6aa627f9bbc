"""Appointments: booking is granted by the server against slot capacity."""
from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select

from app.domain.validation import parse_datetime
from app.extensions import db
from app.models import Appointment, Clinic
from app.models.types import utcnow
from app.services.handlers.registry import handles
from app.services.results import Rejection
from app.services.writes import WriteContext

SLOT_MINUTES = 30


def slot_start(moment):
    return moment.replace(minute=moment.minute - moment.minute % SLOT_MINUTES, second=0,
                          microsecond=0)


@handles("appointment.book")
def book(ctx: WriteContext):
    data = ctx.mutation.data
    clinic_id = ctx.require_own_clinic(data.get("clinic_id"))
    patient_id = ctx.require_patient(data["patient_id"])
    starts_at = parse_datetime(data["starts_at"])
    if starts_at < utcnow() - timedelta(minutes=5):
        message = "The appointment time is in the past."
        raise Rejection("invalid", message, [{"field": "starts_at", "message": message}])
    # Lock the clinic row: bookings for one clinic are decided one at a time.
    ctx.load(Clinic, clinic_id, "Clinic")
    begin = slot_start(starts_at)
    booked = db.session.execute(select(func.count()).select_from(Appointment).where(
        Appointment.clinic_id == clinic_id, Appointment.status == "booked",
        Appointment.starts_at >= begin,
        Appointment.starts_at < begin + timedelta(minutes=SLOT_MINUTES))).scalar_one()
    capacity = current_app.config["APPOINTMENT_SLOT_CAPACITY"]
    if booked >= capacity:
        message = f"That time slot is full ({capacity} appointments). Choose another time."
        raise Rejection("slot_full", message, [{"field": "starts_at", "message": message}])
    appointment = ctx.create(Appointment, {
        "patient_id": patient_id, "clinic_id": clinic_id, "starts_at": starts_at,
        "reason": (data.get("reason") or "").strip() or None, "status": "booked"},
        patient_id=patient_id, clinic_id=clinic_id)
    return ctx.applied(appointment)


@handles("appointment.cancel")
def cancel(ctx: WriteContext):
    appointment = ctx.load(Appointment, ctx.mutation.entity_id, "Appointment")
    ctx.require_patient(appointment.patient_id)
    stale = ctx.check_base_version(appointment, patient_id=appointment.patient_id,
                                   clinic_id=appointment.clinic_id, wanted={"status": "cancelled"})
    if stale:
        return stale
    ctx.update(appointment, {"status": "cancelled",
                             "cancel_reason": (ctx.mutation.data.get("reason") or "").strip() or None},
               patient_id=appointment.patient_id, clinic_id=appointment.clinic_id)
    return ctx.applied(appointment)
