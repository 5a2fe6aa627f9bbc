"""apply(): validation, authorization, policies, history, change log and stored results."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import ChangeLog, Conflict, EntityHistory, MutationResult, Patient, Visit
from app.models.sealed import open_record

pytestmark = pytest.mark.postgres


def test_register_writes_row_history_changelog_and_result(world, write):
    clerk = world.actor(r.REGISTRATION_CLERK)
    result = write(clerk, "patient.register", "patient", {
        "given_name": "Amina", "family_name": "Odhiambo", "sex": "female", "birth_date": "1990-03-04",
        "clinic_id": clerk.clinic_id, "identifiers": [{"system": "national-id", "value": "123"}]})
    assert result.status == "applied"
    assert result.version == 1
    assert result.record["identifiers"][0]["value"] == "123"
    patient = db.session.get(Patient, result.entity_id)
    assert patient.family_name == "Odhiambo" and patient.created_by == clerk.user_id
    history = db.session.execute(select(EntityHistory).where(EntityHistory.entity_id == patient.id)).scalars().all()
    assert [h.version for h in history] == [1]
    change = db.session.execute(select(ChangeLog).where(ChangeLog.entity_id == patient.id)).scalar_one()
    assert (change.entity, change.version, change.clinic_id) == ("patient", 1, clerk.clinic_id)
    stored = db.session.get(MutationResult, result.mid)
    assert stored.status == "applied" and stored.user_id == clerk.user_id


def test_replay_of_same_mid_is_duplicate_with_original_result(world, write):
    clerk = world.actor(r.REGISTRATION_CLERK)
    data = {"given_name": "A", "family_name": "B", "sex": "male", "birth_date": "2000-01-01",
            "clinic_id": clerk.clinic_id}
    mid, pid = new_id(), new_id()
    first = write(clerk, "patient.register", "patient", data, entity_id=pid, mid=mid)
    again = write(clerk, "patient.register", "patient", data, entity_id=pid, mid=mid)
    assert (first.status, again.status) == ("applied", "duplicate")
    assert again.record == first.record
    assert db.session.scalar(select(func.count()).select_from(Patient)) == 1


def test_same_mid_with_other_payload_is_rejected_mid_reused(world, write):
    clerk = world.actor(r.REGISTRATION_CLERK)
    data = {"given_name": "A", "family_name": "B", "sex": "male", "birth_date": "2000-01-01",
            "clinic_id": clerk.clinic_id}
    mid, pid = new_id(), new_id()
    write(clerk, "patient.register", "patient", data, entity_id=pid, mid=mid)
    other = write(clerk, "patient.register", "patient", {**data, "given_name": "C"}, entity_id=pid, mid=mid)
    assert other.status == "rejected" and other.error["code"] == "mid_reused"
    assert db.session.get(Patient, pid).given_name == "A"


def test_invalid_data_names_the_field_and_writes_nothing(world, write):
    clerk = world.actor(r.REGISTRATION_CLERK)
    result = write(clerk, "patient.register", "patient", {
        "given_name": "A", "family_name": "", "sex": "dragon", "birth_date": "04/03/1990",
        "clinic_id": clerk.clinic_id})
    assert result.status == "rejected" and result.error["code"] == "invalid"
    fields = {p["field"]: p["message"] for p in result.error["problems"]}
    assert fields["family_name"] == "Family name is required."
    assert "Sex must be one of" in fields["sex"]
    assert "YYYY-MM-DD" in fields["birth_date"]
    assert db.session.scalar(select(func.count()).select_from(Patient)) == 0
    assert db.session.scalar(select(func.count()).select_from(ChangeLog)) == 0


def test_role_without_permission_is_rejected(world, write, register):
    pid = register(world.actor(r.REGISTRATION_CLERK))
    pharmacist = world.actor(r.PHARMACIST)
    result = write(pharmacist, "observation.record", "observation", {
        "patient_id": pid, "code": "8867-4", "value": 80, "unit": "/min",
        "effective_at": "2026-01-01T10:00:00Z"})
    assert result.status == "rejected" and result.error["code"] == "forbidden"


def test_other_clinic_cannot_write_to_patient(world, write, register):
    pid = register(world.actor(r.REGISTRATION_CLERK, "A"))
    nurse_b = world.actor(r.NURSE, "B")
    result = write(nurse_b, "observation.record", "observation", {
        "patient_id": pid, "code": "8867-4", "value": 80, "unit": "/min",
        "effective_at": "2026-01-01T10:00:00Z"})
    assert result.status == "rejected" and result.error["code"] == "not_found"


def test_implausible_vital_is_rejected_with_reason(world, write, register):
    pid = register(world.actor(r.REGISTRATION_CLERK))
    result = write(world.actor(r.NURSE), "observation.record", "observation", {
        "patient_id": pid, "code": "8310-5", "value": 73, "unit": "Cel",
        "effective_at": "2026-01-01T10:00:00Z"})
    assert result.status == "rejected" and "outside the range" in result.error["message"]


def test_merge_fields_applies_disjoint_edits_and_records_conflict(world, write, register):
    clerk = world.actor(r.REGISTRATION_CLERK)
    pid = register(clerk, phone="0700 000", address="Old road")
    # Device 1 (offline, saw version 1) changes phone; device 2 changed phone and address first.
    first = write(world.actor(r.NURSE), "patient.update", "patient",
                  {"phone": "0722 222", "address": "New road"}, entity_id=pid,
                  base={"phone": "0700 000", "address": "Old road"}, base_version=1)
    assert first.status == "applied" and first.version == 2
    second = write(clerk, "patient.update", "patient", {"phone": "0711 111", "given_name": "Tess"},
                   entity_id=pid, base={"phone": "0700 000", "given_name": "Test"}, base_version=1)
    assert second.status == "conflict"
    assert second.conflict["fields"] == ["phone"] and second.conflict["applied"] == ["given_name"]
    patient = db.session.get(Patient, pid)
    assert (patient.phone, patient.given_name, patient.address) == ("0722 222", "Tess", "New road")
    conflict = db.session.execute(select(Conflict)).scalar_one()
    assert conflict.incoming_values == {"phone": "0711 111"} and conflict.status == "open"
    versions = db.session.execute(select(EntityHistory.record).where(
        EntityHistory.entity_id == pid).order_by(EntityHistory.version)).scalars().all()
    assert [v["phone"] for v in versions] == ["0700 000", "0722 222", "0722 222"]


def test_version_policy_conflict_unless_already_in_effect(world, write, register):
    clerk = world.actor(r.REGISTRATION_CLERK)
    pid = register(clerk)
    visit = write(clerk, "visit.start", "visit", {"patient_id": pid, "clinic_id": clerk.clinic_id,
                                                  "station": "registration"})
    moved = write(clerk, "visit.move", "visit", {"station": "triage"}, entity_id=visit.entity_id,
                  base_version=1)
    assert moved.status == "applied" and moved.version == 2
    same = write(world.actor(r.NURSE), "visit.move", "visit", {"station": "triage"},
                 entity_id=visit.entity_id, base_version=1)
    assert same.status == "applied" and same.version == 2
    stale = write(world.actor(r.NURSE), "visit.move", "visit", {"station": "pharmacy"},
                  entity_id=visit.entity_id, base_version=1)
    assert stale.status == "conflict" and stale.record["station"] == "triage"
    assert db.session.get(Visit, visit.entity_id).station == "triage"


def test_authoritative_dispense_never_exceeds_order(world, write, register):
    pid = register(world.actor(r.REGISTRATION_CLERK))
    order = write(world.actor(r.CLINICIAN), "medication.order", "medication_request", {
        "patient_id": pid, "medication": "Amoxicillin 500 mg", "dose": "1 capsule", "route": "oral",
        "frequency": "three times daily", "quantity": 10})
    pharmacist = world.actor(r.PHARMACIST)
    ok = write(pharmacist, "medication.dispense", "medication_dispense",
               {"request_id": order.entity_id, "quantity": 6})
    too_many = write(pharmacist, "medication.dispense", "medication_dispense",
                     {"request_id": order.entity_id, "quantity": 6})
    assert ok.status == "applied"
    assert too_many.status == "rejected" and too_many.error["code"] == "exceeds_remaining"


def test_signed_note_cannot_be_edited_only_amended(world, write, register):
    pid = register(world.actor(r.REGISTRATION_CLERK))
    clinician = world.actor(r.CLINICIAN)
    note = write(clinician, "note.write", "note", {"patient_id": pid, "text": "Seen."})
    signed = write(clinician, "note.sign", "note", {}, entity_id=note.entity_id, base_version=1)
    assert signed.record["status"] == "signed"
    edit = write(clinician, "note.edit", "note", {"text": "Changed"}, entity_id=note.entity_id,
                 base={"text": "Seen."}, base_version=2)
    assert edit.status == "rejected" and edit.error["code"] == "note_signed"
    amend = write(clinician, "note.amend", "note_addendum", {"note_id": note.entity_id, "text": "Add."})
    assert amend.status == "applied"
    history = db.session.execute(select(EntityHistory.record).where(
        EntityHistory.entity_id == note.entity_id).order_by(EntityHistory.version)).scalars().all()
    latest = open_record("note", history[-1])  # history keeps note text sealed
    assert latest["text"] == "Seen." and latest["addenda"][0]["text"] == "Add."


def test_appointment_slot_capacity(world, write, register, app):
    app.config["APPOINTMENT_SLOT_CAPACITY"] = 1
    clerk = world.actor(r.REGISTRATION_CLERK)
    first, second = register(clerk), register(clerk, given_name="Other")
    when = "2099-01-05T09:10:00Z"
    ok = write(clerk, "appointment.book", "appointment", {"patient_id": first, "starts_at": when})
    full = write(clerk, "appointment.book", "appointment",
                 {"patient_id": second, "starts_at": "2099-01-05T09:20:00Z"})
    assert ok.status == "applied"
    assert full.status == "rejected" and full.error["code"] == "slot_full"


def test_every_mutation_type_has_a_handler():
    from app.domain.mutations import MUTATION_TYPES
    from app.services.handlers import HANDLERS
    assert set(MUTATION_TYPES) == set(HANDLERS)
