"""Two devices change the same record while offline, then sync: what each policy ends with.

Nothing is lost: a value that does not win stays in the record's history, and every
conflict waits on the clinic's review page until a person decides.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Conflict, EntityHistory, MedicationRequest, Observation
from app.models.sealed import open_fields, open_record
from app.models.types import utcnow
from tests.sync.builders import observe

pytestmark = pytest.mark.postgres


@pytest.fixture
def app_overrides():
    return {"APPOINTMENT_SLOT_CAPACITY": 1}


def history(entity: str, entity_id: str, field: str) -> list:
    db.session.rollback()
    rows = db.session.execute(select(EntityHistory).where(
        EntityHistory.entity == entity, EntityHistory.entity_id == entity_id)
        .order_by(EntityHistory.version)).scalars()
    return [open_record(entity, row.record).get(field) for row in rows]  # stored sealed


def open_conflicts() -> list[Conflict]:
    db.session.rollback()
    return list(db.session.execute(select(Conflict).where(Conflict.status == "open")).scalars())


def test_append_both_devices_observations_are_kept(world, register, device):
    pid = register(world.actor("registration_clerk"))
    nurse, doctor = device("nurse"), device("clinician")
    for each in (nurse, doctor):
        each.pull()
    mine = observe(nurse, pid, value=70)
    theirs = observe(doctor, pid, value=90)
    assert [a["status"] for a in nurse.push() + doctor.push()] == ["applied", "applied"]
    for each in (nurse, doctor):
        each.pull()
        assert {mine, theirs} <= {k[1] for k in each.store.rows if k[0] == "observation"}
    assert open_conflicts() == []
    assert db.session.query(Observation).count() == 2


def test_merge_fields_other_fields_apply_and_the_contested_one_waits_for_a_person(
        world, register, device, client_for):
    pid = register(world.actor("registration_clerk"), phone="0700 000", address="Old road")
    offline, online = device("registration_clerk"), device("nurse")
    for each in (offline, online):
        each.pull()
    base = offline.record("patient", pid)
    offline.queue("patient.update", "patient", pid, {"phone": "0711 111"},
                  base={"phone": base["phone"]}, base_version=base["version"])
    online.queue("patient.update", "patient", pid, {"phone": "0722 222", "address": "New road"},
                 base={"phone": base["phone"], "address": base["address"]},
                 base_version=base["version"])
    assert online.push()[0]["status"] == "applied"
    answer = offline.push()[0]
    assert answer["status"] == "conflict"
    assert answer["conflict"]["fields"] == ["phone"]
    assert answer["conflict"]["server"] == {"phone": "0722 222"}
    for each in (offline, online):
        each.pull()
    assert offline.record("patient", pid) == online.record("patient", pid)
    assert online.record("patient", pid)["phone"] == "0722 222"
    assert online.record("patient", pid)["address"] == "New road"
    conflict, = open_conflicts()
    assert (conflict.incoming_values, conflict.server_values) == (
        {"phone": "0711 111"}, {"phone": "0722 222"})
    # A person sees both values at the clinic and picks the offline device's number.
    page = client_for(world.user("registration_clerk")).get("/conflicts")
    assert b"0711 111" in page.data and b"0722 222" in page.data
    client_for(world.user("registration_clerk")).post(
        f"/conflicts/{conflict.id}/resolve", data={"choice": "incoming", "mid": pid})
    assert open_conflicts() == []
    for each in (offline, online):
        each.pull()
        assert each.record("patient", pid)["phone"] == "0711 111"
    # Every value either device wrote is in the history.
    assert {"0700 000", "0722 222", "0711 111"} <= set(history("patient", pid, "phone"))


def test_merge_fields_on_a_draft_note_edited_on_two_of_its_authors_devices(
        world, register, write, device):
    pid = register(world.actor("registration_clerk"))
    note = write(world.actor("nurse"), "note.write", "note",
                 {"patient_id": pid, "text": "Cough."}).entity_id
    nurse, doctor = device("nurse"), device("nurse")  # a tablet and a Chromebook
    for each in (nurse, doctor):
        each.pull()
    for each, text in ((nurse, "Cough, three days."), (doctor, "Cough and fever.")):
        each.queue("note.edit", "note", note, {"text": text}, base={"text": "Cough."},
                   base_version=1)
    assert nurse.push()[0]["status"] == "applied"
    assert doctor.push()[0]["status"] == "conflict"
    assert history("note", note, "text") == ["Cough.", "Cough, three days."]
    conflict, = open_conflicts()
    assert open_fields("note", note, conflict.incoming_values) == {"text": "Cough and fever."}


def test_version_the_second_move_of_a_visit_is_a_conflict_with_the_servers_record(
        world, register, write, device):
    pid = register(world.actor("registration_clerk"))
    visit = write(world.actor("nurse"), "visit.start", "visit", {
        "patient_id": pid, "clinic_id": world.clinics["A"].id, "station": "triage"}).entity_id
    nurse, doctor = device("nurse"), device("clinician")
    for each in (nurse, doctor):
        each.pull()
    nurse.queue("visit.move", "visit", visit, {"station": "consultation"}, base_version=1)
    doctor.queue("visit.move", "visit", visit, {"station": "lab"}, base_version=1)
    assert nurse.push()[0]["status"] == "applied"
    answer = doctor.push()[0]
    assert answer["status"] == "conflict"
    assert answer["record"]["station"] == "consultation"
    assert answer["version"] == 2
    for each in (nurse, doctor):
        each.pull()
        assert each.record("visit", visit)["station"] == "consultation"
    conflict, = open_conflicts()
    assert conflict.incoming_values == {"station": "lab"}


def test_authoritative_two_pharmacists_cannot_dispense_more_than_was_ordered(
        world, register, write, device):
    pid = register(world.actor("registration_clerk"))
    order = write(world.actor("clinician"), "medication.order", "medication_request", {
        "patient_id": pid, "medication": "Amoxicillin 500 mg", "dose": "1 capsule",
        "route": "oral", "frequency": "three times a day", "quantity": 10}).entity_id
    first, second = device("pharmacist"), device("pharmacist")
    for each in (first, second):
        each.pull()
        each.queue("medication.dispense", "medication_dispense", _new(), {
            "request_id": order, "quantity": 6})
    assert first.push()[0]["status"] == "applied"
    refused = second.push()[0]
    assert refused["status"] == "rejected"
    assert refused["error"]["code"] == "exceeds_remaining"
    assert "Only 4 of 10 remain" in refused["error"]["message"]
    db.session.rollback()
    assert db.session.get(MedicationRequest, order).quantity_dispensed == 6
    assert second.store.quarantine, "the refused dispense is shown to a person, not dropped"


def test_authoritative_a_full_slot_refuses_the_second_booking(world, register, device):
    clinic = world.clinics["A"].id
    pid = register(world.actor("registration_clerk"))
    other = register(world.actor("registration_clerk"))
    slot = (utcnow() + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    desk, nurse = device("registration_clerk"), device("nurse")
    for each, patient in ((desk, pid), (nurse, other)):
        each.queue("appointment.book", "appointment", _new(), {
            "patient_id": patient, "clinic_id": clinic,
            "starts_at": slot.isoformat().replace("+00:00", "Z")})
    assert desk.push()[0]["status"] == "applied"
    refused = nurse.push()[0]
    assert (refused["status"], refused["error"]["code"]) == ("rejected", "slot_full")


def _new() -> str:
    from app.domain.ids import new_id
    return new_id()
