"""Patient search over the clinic's patients: name, identifier or phone."""
from __future__ import annotations

from sqlalchemy import and_, func, or_, select

from app.domain.duplicates import normalise_phone
from app.extensions import db
from app.models import Patient, PatientIdentifier
from app.models.sealed import NATIONAL_ID, current_cipher
from app.services.scope import visible_in_clinic
from app.contexts.common import patient_summary

SEARCH_LIMIT = 25


def search_patients(clinic_id: str, q: str, limit: int = SEARCH_LIMIT) -> list[Patient]:
    tokens = [t for t in q.lower().split() if t]
    if not tokens:
        return []
    query = select(Patient).where(visible_in_clinic(clinic_id))
    digits = normalise_phone(q)
    cipher = current_cipher()
    for token in tokens:
        # National ids are sealed: found whole, by blind index; other identifiers by prefix.
        by_identifier = select(PatientIdentifier.patient_id).where(
            PatientIdentifier.active.is_(True), or_(
                and_(PatientIdentifier.system != NATIONAL_ID,
                     func.lower(PatientIdentifier.value_stored).startswith(token)),
                and_(PatientIdentifier.system == NATIONAL_ID,
                     PatientIdentifier.value_index == cipher.blind_index(token))))
        conditions = [func.lower(Patient.given_name).contains(token),
                      func.lower(Patient.family_name).contains(token),
                      Patient.id.in_(by_identifier)]
        if len(digits) >= 4 and token.replace("+", "").replace("-", "").isdigit():
            conditions.append(func.replace(Patient.phone, " ", "").contains(digits))
        query = query.where(or_(*conditions))
    query = query.order_by(Patient.family_name, Patient.given_name).limit(limit)
    return list(db.session.execute(query).scalars())


def query_for_audit(q: str) -> str:
    """The search as the audit log keeps it. A word with a digit in it may be a national id,
    found or not (a typo of one is still one), so it is written as a reference to its blind
    index: the log shows who looked for whom without holding the number, and asks the
    database nothing."""
    cipher = current_cipher()
    return " ".join(f"[id {cipher.blind_index(word)[:12]}]" if any(c.isdigit() for c in word)
                    else word for word in q.split())


def search_context(clinic_id: str, q: str) -> dict:
    patients = search_patients(clinic_id, q)
    return {"q": q, "searched": bool(q.strip()),
            "results": [patient_summary(p.to_record()) for p in patients],
            "limit": SEARCH_LIMIT}
