"""Registration, demographics (merged field by field) and identifiers."""
from __future__ import annotations

from datetime import date

from sqlalchemy import select

from app.domain.ids import derived_id
from app.domain.merge import merge_fields
from app.extensions import db
from app.models import Patient, PatientIdentifier
from app.models.sealed import current_cipher
from app.models.types import utcnow
from app.services.handlers.registry import handles
from app.services.results import Rejection
from app.services.writes import WriteContext


def check_birth_date(value: str) -> date:
    born = date.fromisoformat(value)
    today = utcnow().date()
    problem = None
    if born > today:
        problem = "Date of birth is in the future."
    elif today.year - born.year > 130:
        problem = "Date of birth is more than 130 years ago."
    if problem:
        raise Rejection("invalid", problem, [{"field": "birth_date", "message": problem}])
    return born


def check_identifier_free(system: str, value: str, patient_id: str | None) -> None:
    # By blind index: national ids are sealed, and sealing is randomised.
    clash = db.session.execute(
        select(PatientIdentifier.patient_id).where(
            PatientIdentifier.system == system,
            PatientIdentifier.value_index == current_cipher().blind_index(value),
            PatientIdentifier.active.is_(True))).first()
    if clash is not None and clash.patient_id != patient_id:
        # The value is not repeated: this answer is stored with the mutation's result.
        message = (f"This {system} already belongs to another patient. "
                   "Search for that patient instead of adding it again.")
        raise Rejection("identifier_in_use", message, [{"field": "value", "message": message}])


def _demographics(data: dict) -> dict:
    fields = {k: data[k] for k in Patient.DEMOGRAPHIC_FIELDS if k in data}
    for name in ("given_name", "family_name", "phone", "address"):
        if isinstance(fields.get(name), str):
            fields[name] = fields[name].strip() or None
    if "birth_date" in fields:
        fields["birth_date"] = check_birth_date(fields["birth_date"])
    return fields


@handles("patient.register")
def register(ctx: WriteContext):
    data = ctx.mutation.data
    clinic_id = ctx.require_own_clinic(data["clinic_id"])
    identifiers = data.get("identifiers") or []
    for ident in identifiers:
        check_identifier_free(ident["system"], ident["value"], None)
    patient = ctx.insert(Patient, {**_demographics(data), "clinic_id": clinic_id,
                                   "organization_id": ctx.actor.organization_id})
    rows = [PatientIdentifier(
        id=derived_id(ctx.mutation.mid, f"identifier-{n}"), patient_id=patient.id,
        system=ident["system"], value=ident["value"].strip(), active=True, version=1,
        created_by=ctx.actor.user_id) for n, ident in enumerate(identifiers)]
    db.session.add_all(rows)
    db.session.flush()
    # Each identifier is a record of its own on devices too: it needs its history and its
    # place in the change log, like one added later.
    for row in rows:
        ctx.record(row, patient_id=patient.id, clinic_id=clinic_id)
    ctx.record(patient, patient_id=patient.id, clinic_id=clinic_id)
    return ctx.applied(patient)


@handles("patient.update")
def update(ctx: WriteContext):
    patient = ctx.lock_patient(ctx.mutation.entity_id)
    incoming = ctx.mutation.data
    if "birth_date" in incoming:
        check_birth_date(incoming["birth_date"])
    current = patient.to_record()
    outcome = merge_fields(current, ctx.mutation.base, incoming,
                           base_version_matches=ctx.mutation.base_version == patient.version)
    if outcome.apply:
        ctx.update(patient, _demographics(outcome.apply), patient_id=patient.id,
                   clinic_id=patient.clinic_id, before=current)
    if outcome.conflicts:
        return ctx.conflict(patient, outcome.conflicts, incoming, ctx.mutation.base or {},
                            patient_id=patient.id, clinic_id=patient.clinic_id,
                            applied_fields=sorted(outcome.apply))
    return ctx.applied(patient)


@handles("patient.identifier.add")
def add_identifier(ctx: WriteContext):
    data = ctx.mutation.data
    patient = ctx.lock_patient(data["patient_id"])
    check_identifier_free(data["system"], data["value"], patient.id)
    identifier = ctx.create(PatientIdentifier, {
        "patient_id": patient.id, "system": data["system"], "value": data["value"].strip(),
        "active": True}, patient_id=patient.id, clinic_id=patient.clinic_id)
    # The patient's record lists its identifiers, so it gets a new version too.
    ctx.update(patient, {}, patient_id=patient.id, clinic_id=patient.clinic_id)
    return ctx.applied(identifier)


@handles("patient.identifier.retire")
def retire_identifier(ctx: WriteContext):
    identifier = ctx.load(PatientIdentifier, ctx.mutation.entity_id, "Identifier")
    patient = ctx.lock_patient(identifier.patient_id)
    stale = ctx.check_base_version(identifier, patient_id=patient.id, clinic_id=patient.clinic_id,
                                   wanted={"active": False})
    if stale:
        return stale
    ctx.update(identifier, {"active": False,
                            "retired_reason": ctx.mutation.data.get("reason") or None},
               patient_id=patient.id, clinic_id=patient.clinic_id)
    ctx.update(patient, {}, patient_id=patient.id, clinic_id=patient.clinic_id)
    return ctx.applied(identifier)
