"""Audit entries for the signed-in person's request, written before the answer is sent."""
from __future__ import annotations

from flask import g, request
from flask_login import current_user

from app.domain import roles as r
from app.models.types import utcnow
from app.services import audit
from app.services import break_glass


BREAK_GLASS_CACHE = "break_glass_grants"  # in g: this request's running grants of the user


def running_grants() -> dict:
    """{patient id: grant} the signed-in person holds now; looked up once per request, and
    only for roles that can hold one, so other people's requests pay nothing for it."""
    if not current_user.is_authenticated or not r.can_break_glass(current_user.roles):
        return {}
    grants = g.get(BREAK_GLASS_CACHE)
    if grants is None:
        grants = break_glass.active_grants(current_user.user.id, utcnow())
        setattr(g, BREAK_GLASS_CACHE, grants)
    return grants


def _running_grant_id(patient_id: str | None) -> str | None:
    """The grant under which the signed-in person reaches this patient now, if any: every
    event of theirs about the patient in the window carries it (DESIGN.md §7)."""
    grant = running_grants().get(patient_id) if patient_id else None
    return grant.id if grant is not None else None


def entry(action: str, outcome: str = "success", patient_id: str | None = None,
          detail: dict | None = None, break_glass_id: str | None = None) -> audit.AuditEntry:
    signed_in = current_user.is_authenticated
    return audit.AuditEntry(
        action=action, outcome=outcome,
        user_id=current_user.user.id if signed_in else None,
        username=current_user.user.username if signed_in else None,
        role=",".join(sorted(current_user.roles)) if signed_in else None,
        clinic_id=current_user.clinic_id if signed_in else None,
        patient_id=patient_id, device=request.headers.get("X-Client-Id"),
        break_glass_id=break_glass_id or _running_grant_id(patient_id),
        request_id=g.get("request_id"), detail=detail or {})


def record(action: str, outcome: str = "success", patient_id: str | None = None,
           detail: dict | None = None, break_glass_id: str | None = None) -> None:
    """Raises AuditUnavailable: the caller's access is then denied by the error handler."""
    audit.append([entry(action, outcome, patient_id, detail, break_glass_id)])


def record_patient_reads(action: str, patient_ids: list[str], detail: dict | None = None) -> None:
    """One event per patient shown, so the viewer's patient filter finds every read."""
    if not patient_ids:
        audit.append([entry(action, detail={**(detail or {}), "patients": 0})])
        return
    audit.append([entry(action, patient_id=pid, detail=detail) for pid in patient_ids])
