"""Which records a device holds: its clinic's active patients, within history depth, and
sensitive categories only for the roles that need them (DESIGN.md §5)."""
from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, bindparam, or_, select, union

from app.domain import roles as r
from app.domain.validation import parse_datetime
from app.extensions import db
from app.models import Appointment, ChangeLog, Patient, Visit
from app.services.actor import Actor
from app.services.scope import visible_in_clinic

NATIONAL_ID = "national_id"
HIV_STATUS = "hiv_status"
MENTAL_HEALTH = "mental_health"

DEFAULT_SENSITIVE_ROLES = {
    NATIONAL_ID: frozenset({r.REGISTRATION_CLERK, r.CLINICIAN}),
    HIV_STATUS: frozenset({r.CLINICIAN, r.PHARMACIST}),
    MENTAL_HEALTH: frozenset({r.CLINICIAN}),
}
# How far back each category goes onto a device, in days, by the time the record is about.
DEFAULT_HISTORY_DAYS = {"observation": 730, "note": 1825, "note_addendum": 1825,
                        "consent": 1825}
_HISTORY_FIELD = {"observation": "effective_at", "note": "created_at",
                  "note_addendum": "created_at", "consent": "signed_at"}


def allowed_categories(roles: frozenset[str]) -> frozenset[str]:
    table = current_app.config.get("SYNC_SENSITIVE_ROLES", DEFAULT_SENSITIVE_ROLES)
    return frozenset(category for category, needing in table.items() if roles & needing)


def scope_key(actor: Actor) -> str:
    """Changes when what the device may hold changes: its cursor is then reset."""
    basis = "|".join([actor.clinic_id or "", ",".join(sorted(actor.roles)),
                      ",".join(sorted(allowed_categories(actor.roles)))])
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def subset_patient_ids(actor: Actor, client_id: str, now: datetime) -> set[str]:
    """Patients active at the device's clinic within the window, and those it registered."""
    clinic = actor.clinic_id
    since = now - timedelta(days=current_app.config["SYNC_WINDOW_DAYS"])
    created_here = select(ChangeLog.entity_id).where(
        ChangeLog.origin_client_id == client_id, ChangeLog.entity == "patient",
        ChangeLog.version == 1)
    query = union(
        select(Patient.id).where(Patient.clinic_id == clinic, Patient.created_at >= since),
        select(Visit.patient_id).where(Visit.clinic_id == clinic, or_(
            Visit.started_at >= since, Visit.status == "in-progress")),
        select(Appointment.patient_id).where(Appointment.clinic_id == clinic,
                                             Appointment.starts_at >= since),
        select(Patient.id).where(Patient.id.in_(created_here), visible_in_clinic(clinic)),
    )
    return set(db.session.execute(query).scalars())


# Time alone only takes patients out of a subset (their registration, visit or appointment
# falls out of the window): worked out again at least this often, a device lets go of them
# at most this late.
SUBSET_RECHECK = timedelta(hours=1)


def subset_may_have_changed(actor: Actor, client_id: str, since: tuple[int, int]) -> bool:
    """Whether anything written after log position `since` could change which patients
    subset_patient_ids() finds: a patient registered at the clinic or by the device, or a
    visit or appointment of the clinic started, moved or ended. Everything clinical is
    written through the change log (DESIGN.md §2), so what is not there did not happen."""
    query = _subset_changes(db.session.get_bind().dialect.name)
    return db.session.execute(query, {
        "txid": since[0], "seq": since[1], "clinic_id": actor.clinic_id,
        "client_id": client_id}).first() is not None


@functools.cache
def _subset_changes(dialect_name: str):
    return (select(ChangeLog.seq)
            .where(ChangeLog.after(bindparam("txid"), bindparam("seq"), dialect_name),
                   or_(and_(ChangeLog.entity.in_(("visit", "appointment")),
                            ChangeLog.clinic_id == bindparam("clinic_id")),
                       and_(ChangeLog.entity == "patient", ChangeLog.version == 1,
                            or_(ChangeLog.clinic_id == bindparam("clinic_id"),
                                ChangeLog.origin_client_id == bindparam("client_id")))))
            .limit(1))


def condition_category(code: str | None) -> str | None:
    """ICD-10: B20-B24 and Z21 say HIV status, chapter F is mental health."""
    code = (code or "").strip().upper()
    if code[:3] in ("B20", "B21", "B22", "B23", "B24", "Z21"):
        return HIV_STATUS
    if code.startswith("F"):
        return MENTAL_HEALTH
    return None


class DeviceView:
    """What one device may hold, worked out once for a page of records rather than per record."""

    def __init__(self, allowed: frozenset[str], now: datetime):
        self.allowed = allowed
        days = {**DEFAULT_HISTORY_DAYS, **current_app.config.get("SYNC_HISTORY_DAYS", {})}
        self.since = {entity: now - timedelta(days=days[entity])
                      for entity in _HISTORY_FIELD if days.get(entity) is not None}

    def of(self, entity: str, record: dict) -> dict | None:
        """The record as this device may hold it, or None when it stays on the server."""
        if entity == "patient" and NATIONAL_ID not in self.allowed:
            return {**record, "identifiers": [i for i in record.get("identifiers", [])
                                              if i.get("system") != "national-id"]}
        if entity == "patient_identifier" and record.get("system") == "national-id":
            return record if NATIONAL_ID in self.allowed else None
        if entity == "condition":
            category = condition_category(record.get("code"))
            return record if category is None or category in self.allowed else None
        since = self.since.get(entity)
        if since is not None:
            when = parse_datetime(record.get(_HISTORY_FIELD[entity]) or "")
            if when is not None and when < since:
                return None
        return record

