"""Audit entries for the signed-in person's request, written before the answer is sent."""
from __future__ import annotations

from flask import g, request
from flask_login import current_user

from app.services import audit


def entry(action: str, outcome: str = "success", patient_id: str | None = None,
          detail: dict | None = None) -> audit.AuditEntry:
    signed_in = current_user.is_authenticated
    return audit.AuditEntry(
        action=action, outcome=outcome,
        user_id=current_user.user.id if signed_in else None,
        username=current_user.user.username if signed_in else None,
        role=",".join(sorted(current_user.roles)) if signed_in else None,
        clinic_id=current_user.clinic_id if signed_in else None,
        patient_id=patient_id, device=request.headers.get("X-Client-Id"),
        request_id=g.get("request_id"), detail=detail or {})


def record(action: str, outcome: str = "success", patient_id: str | None = None,
           detail: dict | None = None) -> None:
    """Raises AuditUnavailable: the caller's access is then denied by the error handler."""
    audit.append([entry(action, outcome, patient_id, detail)])


def record_patient_reads(action: str, patient_ids: list[str], detail: dict | None = None) -> None:
    """One event per patient shown, so the viewer's patient filter finds every read."""
    if not patient_ids:
        audit.append([entry(action, detail={**(detail or {}), "patients": 0})])
        return
    audit.append([entry(action, patient_id=pid, detail=detail) for pid in patient_ids])
