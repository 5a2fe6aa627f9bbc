"""Break-glass: opening a patient outside the clinic's scope for a short time, and its review.

A grant belongs to one user and one patient; while it runs, that user may read the patient's
pages and every audit event of theirs about the patient carries the grant's id. The privacy
officers of the patient's organization review every grant. Nothing here commits or audits:
the views do, so the audit event and the grant are written together or not at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, func, or_, select

from app.domain.ids import new_id
from app.extensions import db
from app.models import AuditEvent, BreakGlassGrant, Clinic, Patient, PatientIdentifier, User
from app.models.sealed import NATIONAL_ID, current_cipher
from app.services import accounts

DISPOSITIONS = {
    "justified": "Justified",
    "not-justified": "Not justified",
    "needs-follow-up": "Needs follow-up",
}
MIN_REASON_WORDS = 3
MAX_REASON_CHARS = 1000
MAX_NOTE_CHARS = 2000
TAGGED_EVENTS_SHOWN = 500


class Refused(Exception):
    """The grant was not opened or the review not recorded: {field: message} for the form."""

    def __init__(self, errors: dict[str, str], problem: str):
        super().__init__(problem)
        self.errors = errors
        self.problem = problem  # a short code for the audit event


@dataclass(frozen=True)
class Limits:
    minutes: int
    review_hours: int

    @classmethod
    def from_config(cls, config) -> Limits:
        return cls(int(config["BREAK_GLASS_MINUTES"]), int(config["BREAK_GLASS_REVIEW_HOURS"]))


def check_reason(reason: str) -> str:
    """The reason as it will be stored; Refused when it does not say why."""
    reason = " ".join(reason.split())[:MAX_REASON_CHARS]
    if len(reason.split()) < MIN_REASON_WORDS:
        raise Refused({"reason": "Say in a few words why you need this record now, e.g. "
                                 "“unconscious on arrival, checking allergies”."}, "no_reason")
    return reason


def check_code(user: User, code: str) -> None:
    """A fresh code of the user's own code app, used up by this check."""
    problem = accounts.use_fresh_code(user, code)
    if problem == "locked":
        raise Refused({"code": "Too many wrong codes: your account is paused for a few minutes. "
                               "Try again later or ask an administrator."}, "locked")
    if problem:
        raise Refused({"code": "That code is not right or was already used. Wait for the next "
                               "code in your app and enter it."}, "bad_code")


def patient_in_organization(patient_id: str, organization_id: str) -> Patient | None:
    patient = db.session.get(Patient, patient_id)
    return patient if patient is not None and patient.organization_id == organization_id else None


def patients_with_identifier(value: str, organization_id: str) -> list[Patient]:
    """Exact matches only: a lookup across clinics must not become a browse of them."""
    value = value.strip().lower()
    # National ids are sealed and found by blind index, as patient search finds them.
    matches = or_(and_(PatientIdentifier.system != NATIONAL_ID,
                       func.lower(PatientIdentifier.value_stored) == value),
                  and_(PatientIdentifier.system == NATIONAL_ID,
                       PatientIdentifier.value_index == current_cipher().blind_index(value)))
    ids = select(PatientIdentifier.patient_id).where(PatientIdentifier.active.is_(True), matches)
    query = (select(Patient).where(Patient.id.in_(ids), Patient.organization_id == organization_id)
             .order_by(Patient.id).limit(5))
    return list(db.session.execute(query).scalars())


def open_grant(user: User, clinic_id: str, patient: Patient, reason: str, now: datetime,
               limits: Limits) -> BreakGlassGrant:
    grant = BreakGlassGrant(
        id=new_id(), user_id=user.id, patient_id=patient.id, clinic_id=clinic_id,
        organization_id=patient.organization_id, reason=reason, started_at=now,
        expires_at=now + timedelta(minutes=limits.minutes),
        review_due_at=now + timedelta(hours=limits.review_hours))
    db.session.add(grant)
    db.session.flush()
    return grant


def active_grants(user_id: str, now: datetime) -> dict[str, BreakGlassGrant]:
    """{patient id: grant} of the user's grants running now (the latest if several)."""
    rows = db.session.execute(select(BreakGlassGrant).where(
        BreakGlassGrant.user_id == user_id, BreakGlassGrant.expires_at > now,
        BreakGlassGrant.started_at <= now).order_by(BreakGlassGrant.started_at)).scalars()
    return {grant.patient_id: grant for grant in rows}


# --- Review --------------------------------------------------------------------------------


def grant_for_review(grant_id: str, organization_id: str) -> BreakGlassGrant | None:
    grant = db.session.get(BreakGlassGrant, grant_id)
    return grant if grant is not None and grant.organization_id == organization_id else None


def record_review(grant: BreakGlassGrant, reviewer: User, disposition: str, note: str,
                  now: datetime) -> None:
    if grant.reviewed_at is not None:
        raise Refused({"_form": "This emergency access was already reviewed. Nothing was "
                                "changed."}, "already_reviewed")
    if grant.user_id == reviewer.id:
        raise Refused({"_form": "Your own emergency access is reviewed by another privacy "
                                "officer. Nothing was recorded."}, "own_grant")
    errors = {}
    if disposition not in DISPOSITIONS:
        errors["disposition"] = "Choose whether the access was justified."
    note = note.strip()[:MAX_NOTE_CHARS]
    if not note:
        errors["note"] = "Write a short note: what you checked, and what follows."
    if errors:
        raise Refused(errors, "invalid")
    grant.reviewed_by, grant.reviewed_at = reviewer.id, now
    grant.disposition, grant.review_note = disposition, note
    db.session.flush()


def open_review_counts(organization_id: str, now: datetime) -> dict[str, int]:
    waiting = select(BreakGlassGrant.review_due_at).where(
        BreakGlassGrant.organization_id == organization_id, BreakGlassGrant.reviewed_at.is_(None))
    dues = list(db.session.execute(waiting).scalars())
    return {"open": len(dues), "past_due": sum(1 for due in dues if due <= now)}


def review_queue(organization_id: str, now: datetime, reviewed_shown: int = 20) -> dict:
    """Open reviews (past due first, each list newest first) and the latest reviewed ones."""
    base = select(BreakGlassGrant).where(BreakGlassGrant.organization_id == organization_id)
    waiting = list(db.session.execute(base.where(BreakGlassGrant.reviewed_at.is_(None))
                                      .order_by(BreakGlassGrant.started_at.desc(),
                                                BreakGlassGrant.id.desc())).scalars())
    reviewed = list(db.session.execute(base.where(BreakGlassGrant.reviewed_at.is_not(None))
                                       .order_by(BreakGlassGrant.reviewed_at.desc(),
                                                 BreakGlassGrant.id.desc())
                                       .limit(reviewed_shown)).scalars())
    counts = tagged_counts([g.id for g in waiting + reviewed])
    return {
        "past_due": [summary(g, now, counts) for g in waiting if g.review_due_at <= now],
        "open": [summary(g, now, counts) for g in waiting if g.review_due_at > now],
        "reviewed": [summary(g, now, counts) for g in reviewed],
    }


def summary(grant: BreakGlassGrant, now: datetime, counts: dict[str, int]) -> dict:
    patient = grant.patient
    return {
        "id": grant.id, "username": grant.user.username, "user_name": grant.user.display_name,
        "clinic_name": grant.clinic.name, "patient_id": grant.patient_id,
        "patient_name": f"{patient.family_name}, {patient.given_name}",
        "patient_clinic_name": db.session.get(Clinic, patient.clinic_id).name,
        "reason": grant.reason, "started_at": grant.started_at, "expires_at": grant.expires_at,
        "active": grant.started_at <= now < grant.expires_at,
        "review_due_at": grant.review_due_at, "past_due": grant.reviewed_at is None
        and grant.review_due_at <= now,
        "accesses": counts.get(grant.id, 0),
        "reviewed_at": grant.reviewed_at,
        "reviewer_name": grant.reviewer.display_name if grant.reviewer else "",
        "disposition": grant.disposition,
        "disposition_label": DISPOSITIONS.get(grant.disposition or "", ""),
        "review_note": grant.review_note,
    }


def _accesses():
    # The opening and the reviews carry the grant's id too; they are not accesses to count.
    return AuditEvent.action.not_like("break\\_glass.%", escape="\\")


def tagged_counts(grant_ids: list[str]) -> dict[str, int]:
    if not grant_ids:
        return {}
    query = (select(AuditEvent.break_glass_id, func.count()).where(
        AuditEvent.break_glass_id.in_(grant_ids), _accesses())
        .group_by(AuditEvent.break_glass_id))
    # A short read of its own, as the audit viewer does: on SQLite an audit-database
    # transaction holds the write lock that the audit append of this request needs.
    with db.engines["audit"].connect() as conn:
        return {row[0]: row[1] for row in conn.execute(query)}


def tagged_events(grant_id: str) -> list:
    query = (select(AuditEvent).where(AuditEvent.break_glass_id == grant_id)
             .order_by(AuditEvent.id).limit(TAGGED_EVENTS_SHOWN))
    with db.engines["audit"].connect() as conn:
        return list(conn.execute(query))


def limits() -> Limits:
    return Limits.from_config(current_app.config)
