"""Patient search over the clinic's patients: name, identifier or phone."""
from __future__ import annotations

from sqlalchemy import func, or_, select

from app.domain.duplicates import normalise_phone
from app.extensions import db
from app.models import Patient, PatientIdentifier
from app.services.scope import visible_in_clinic
from app.contexts.common import patient_summary

SEARCH_LIMIT = 25


def search_patients(clinic_id: str, q: str, limit: int = SEARCH_LIMIT) -> list[Patient]:
    tokens = [t for t in q.lower().split() if t]
    if not tokens:
        return []
    query = select(Patient).where(visible_in_clinic(clinic_id))
    digits = normalise_phone(q)
    for token in tokens:
        by_identifier = select(PatientIdentifier.patient_id).where(
            func.lower(PatientIdentifier.value).startswith(token),
            PatientIdentifier.active.is_(True))
        conditions = [func.lower(Patient.given_name).contains(token),
                      func.lower(Patient.family_name).contains(token),
                      Patient.id.in_(by_identifier)]
        if len(digits) >= 4 and token.replace("+", "").replace("-", "").isdigit():
            conditions.append(func.replace(Patient.phone, " ", "").contains(digits))
        query = query.where(or_(*conditions))
    query = query.order_by(Patient.family_name, Patient.given_name).limit(limit)
    return list(db.session.execute(query).scalars())


def search_context(clinic_id: str, q: str) -> dict:
    patients = search_patients(clinic_id, q)
    return {"q": q, "searched": bool(q.strip()),
            "results": [patient_summary(p.to_record()) for p in patients],
            "limit": SEARCH_LIMIT}
