"""Which patients a clinic may see: registered there, or brought there by a visit or appointment."""
from __future__ import annotations

from sqlalchemy import exists, or_, select

from app.extensions import db
from app.models import Appointment, Patient, Visit


def visible_in_clinic(clinic_id: str):
    """A SQL condition on Patient: true for the patients this clinic may see."""
    return or_(
        Patient.clinic_id == clinic_id,
        exists().where(Visit.patient_id == Patient.id, Visit.clinic_id == clinic_id),
        exists().where(Appointment.patient_id == Patient.id, Appointment.clinic_id == clinic_id),
    )


def patient_visible(patient_id: str, clinic_id: str | None) -> bool:
    if not clinic_id:
        return False
    query = select(Patient.id).where(Patient.id == patient_id, visible_in_clinic(clinic_id))
    return db.session.execute(query).first() is not None
