"""Pull: every change a device may hold, in order, nothing skipped, evictions and resets."""
from __future__ import annotations

import base64
import gzip
import importlib
import json
import shutil
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import update

from app.domain.ids import new_id
from app.extensions import db
from app.models import Membership, Observation, Patient, Visit
from app.models.types import utcnow
from sync_api.client import SyncClient as Device
from sync_api.cursor import seal, unseal
from sync_api.pull import BACKFILL_ORDER
from tests.sync.builders import observe, register


def age(model, row_id: str, days: int, *columns: str) -> None:
    """Move a record's times into the past, as if it were made `days` ago."""
    when = utcnow() - timedelta(days=days)
    db.session.execute(update(model).where(model.id == row_id)
                       .values(**{c: when for c in columns}))
    db.session.commit()


# The module, not the function of the same name the sync_api package exports.
pull_module = importlib.import_module("sync_api.pull")


def held(device: Device, entity: str) -> set[str]:
    return {key[1] for key in device.store.rows if key[0] == entity}


@pytest.fixture
def clinic_a(world):
    return world.clinics["A"].id


@pytest.mark.postgres
def test_a_new_device_gets_its_clinics_active_patients_and_nothing_else(
        world, write, register, device, clinic_a):
    clerk_a, clerk_b = world.actor("registration_clerk"), world.actor("registration_clerk", "B")
    recent = register(clerk_a, given_name="Recent")
    dormant = register(clerk_a, given_name="Dormant")
    age(Patient, dormant, 400, "created_at")
    register(clerk_b, given_name="Elsewhere")
    returning = register(clerk_a, given_name="Returning")   # registered long ago, seen today
    age(Patient, returning, 900, "created_at")
    write(world.actor("nurse"), "visit.start", "visit",
          {"patient_id": returning, "clinic_id": clinic_a, "station": "triage"})
    nurse = device("nurse")
    nurse.pull()
    assert held(nurse, "patient") == {recent, returning}
    assert len(held(nurse, "visit")) == 1


@pytest.mark.postgres
def test_pages_of_a_pull_deliver_every_record_once(world, device, clinic_a):
    clerk = device("registration_clerk")
    patients = [register(clerk, clinic_a) for _ in range(7)]
    clerk.push()
    nurse = device("nurse")
    observations = {observe(nurse, pid, value=60 + i) for i, pid in enumerate(patients)}
    nurse.push()
    fresh = device("nurse")
    pages = []
    original = fresh.transport

    def counting(method, path, body):
        reply = original(method, path, body)
        pages.append(len(reply.body.get("changes", [])))
        return reply
    fresh.transport = counting
    fresh.pull(limit=3)
    assert len(pages) > 4 and max(pages) <= 3
    assert held(fresh, "patient") == set(patients)
    assert held(fresh, "observation") == observations


@pytest.mark.postgres
def test_a_cursor_issued_before_the_patient_order_goes_on_without_a_gap(app, world, device,
                                                                        clinic_a):
    """A device mid-backfill when the server moved to (patient_id, id) order holds a version 1
    cursor (entity index, last id in id order): that entity starts over, nothing is missed."""
    clerk = device("registration_clerk")
    patients = [register(clerk, clinic_a) for _ in range(5)]
    clerk.push()
    nurse = device("nurse")
    observations = {observe(nurse, pid, value=60 + i) for i, pid in enumerate(patients * 2)}
    nurse.push()
    fresh = device("nurse")
    key = f"{app.config['SECRET_KEY']}|{fresh.client_id}".encode()
    original, rewritten = fresh.transport, []

    def old_cursor(method, path, body):
        reply = original(method, path, body)
        cursor = unseal(reply.body.get("cursor"), key)
        if not rewritten and cursor and cursor.backfill and cursor.backfill[2]:
            entity = BACKFILL_ORDER[cursor.backfill[0]]
            if entity == "observation":
                # The highest id already delivered: in id order, all below it would count
                # as sent, though (patient_id, id) order has not sent them all yet.
                sent = max(c["id"] for c in reply.body["changes"] if c["entity"] == entity)
                raw = json.dumps([1, cursor.epoch, cursor.scope, cursor.txid, cursor.seq,
                                  cursor.gen, [cursor.backfill[0], sent]]).encode()
                body_v1 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
                reply.body["cursor"] = seal(SimpleNamespace(encode=lambda: body_v1), key)
                rewritten.append(sent)
        return reply
    fresh.transport = old_cursor
    fresh.pull(limit=4)
    assert rewritten
    assert held(fresh, "patient") == set(patients)
    assert held(fresh, "observation") == observations


@pytest.mark.postgres
def test_a_later_pull_brings_only_what_changed_and_last_seq(world, device, clinic_a):
    clerk, nurse = device("registration_clerk"), device("nurse")
    pid = register(clerk, clinic_a)
    clerk.push()
    nurse.pull()
    assert nurse.pull() == 0
    clerk.queue("patient.update", "patient", pid, {"phone": "0711 111"}, base={"phone": None})
    clerk.push()
    reply = nurse.transport("POST", "/sync/v1/pull", {
        "protocol": 1, "client_id": nurse.client_id, "cursor": nurse.store.cursor})
    assert [(c["entity"], c["version"]) for c in reply.body["changes"]] == [("patient", 2)]
    assert reply.body["changes"][0]["record"]["phone"] == "0711 111"
    assert reply.body["last_seq"] == 0            # this device has pushed nothing
    observe(nurse, pid)
    nurse.push()
    reply = nurse.transport("POST", "/sync/v1/pull", {
        "protocol": 1, "client_id": nurse.client_id, "cursor": reply.body["cursor"]})
    assert reply.body["last_seq"] == 1
    assert [c["entity"] for c in reply.body["changes"]] == ["observation"]


@pytest.mark.postgres
def test_a_patient_who_leaves_the_subset_is_evicted_with_their_records(
        world, write, register, device, clinic_a, monkeypatch):
    clerk = world.actor("registration_clerk")
    pid = register(clerk)
    write(world.actor("nurse"), "observation.record", "observation", {
        "patient_id": pid, "code": "8867-4", "value": 70, "unit": "/min",
        "effective_at": "2026-11-21T08:00:00Z"})
    nurse = device("nurse")
    nurse.pull()
    assert pid in held(nurse, "patient") and len(held(nurse, "observation")) == 1
    age(Patient, pid, 400, "created_at")        # no longer active at this clinic
    nurse.pull()
    # Time alone takes a patient out of the subset: that is worked out again hourly.
    assert pid in held(nurse, "patient")
    monkeypatch.setattr(pull_module, "utcnow", lambda: utcnow() + timedelta(minutes=61))
    nurse.pull()
    assert pid not in held(nurse, "patient")
    assert held(nurse, "observation") == set()


@pytest.mark.postgres
def test_a_pull_after_only_readings_were_written_does_not_read_the_clinics_patients_again(
        world, device, clinic_a, monkeypatch):
    clerk = device("registration_clerk")
    pid = register(clerk, clinic_a)
    clerk.push()
    nurse = device("nurse")
    nurse.pull()
    worked_out = []
    original = pull_module.subset_patient_ids
    monkeypatch.setattr(pull_module, "subset_patient_ids",
                        lambda *args: worked_out.append(args) or original(*args))
    reading = observe(nurse, pid)
    nurse.push()
    nurse.pull()
    assert worked_out == []
    assert reading in held(nurse, "observation")
    # A patient registered at the clinic by someone else reaches this device at its next pull.
    other = register(clerk, clinic_a)
    clerk.push()
    nurse.pull()
    assert len(worked_out) == 1
    assert other in held(nurse, "patient")


@pytest.mark.postgres
def test_a_cursor_from_before_the_subset_mark_goes_on_where_it_was(app, world, device, clinic_a):
    clerk = device("registration_clerk")
    first = register(clerk, clinic_a)
    clerk.push()
    nurse = device("nurse")
    nurse.pull()
    key = f"{app.config['SECRET_KEY']}|{nurse.client_id}".encode()
    cursor = unseal(nurse.store.cursor, key)
    raw = json.dumps([2, cursor.epoch, cursor.scope, cursor.txid, cursor.seq, cursor.gen,
                      None]).encode()
    body_v2 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    nurse.store.cursor = seal(SimpleNamespace(encode=lambda: body_v2), key)
    later = register(clerk, clinic_a)
    clerk.push()
    answers, original = [], nurse.transport
    nurse.transport = lambda *request: answers.append(original(*request)) or answers[-1]
    nurse.pull()
    assert held(nurse, "patient") == {first, later}
    assert [a.body["reset"] for a in answers] == [False] * len(answers)
    # Only the new patient came: the device was not sent everything again.
    assert {c["id"] for a in answers for c in a.body["changes"]
            if c["entity"] == "patient"} == {later}


@pytest.mark.postgres
def test_a_patient_entering_the_subset_arrives_with_their_history(
        world, write, register, device, clinic_a):
    pid = register(world.actor("registration_clerk"))
    obs = write(world.actor("nurse"), "observation.record", "observation", {
        "patient_id": pid, "code": "8867-4", "value": 70, "unit": "/min",
        "effective_at": "2026-06-01T08:00:00Z"}).entity_id
    age(Patient, pid, 400, "created_at")
    nurse = device("nurse")
    nurse.pull()
    assert pid not in held(nurse, "patient")
    write(world.actor("nurse"), "visit.start", "visit",
          {"patient_id": pid, "clinic_id": clinic_a, "station": "triage"})
    nurse.pull()
    assert pid in held(nurse, "patient")
    assert obs in held(nurse, "observation")      # written before the device held the patient


@pytest.mark.postgres
def test_a_lost_pull_answer_is_given_again_for_the_same_cursor(world, write, register, device,
                                                               clinic_a):
    pid = register(world.actor("registration_clerk"))
    age(Patient, pid, 400, "created_at")
    nurse = device("nurse")
    nurse.pull()
    write(world.actor("nurse"), "visit.start", "visit",
          {"patient_id": pid, "clinic_id": clinic_a, "station": "triage"})
    body = {"protocol": 1, "client_id": nurse.client_id, "cursor": nurse.store.cursor}
    lost = nurse.transport("POST", "/sync/v1/pull", body)
    again = nurse.transport("POST", "/sync/v1/pull", body)
    assert {c["id"] for c in lost.body["changes"]} == {c["id"] for c in again.body["changes"]}
    assert pid in {c["id"] for c in again.body["changes"]}


def test_an_unknown_cursor_resets_the_device(world, register, device):
    register(world.actor("registration_clerk"))
    nurse = device("nurse")
    nurse.pull()
    nurse.store.rows[("patient", new_id())] = {"id": "stale", "version": 1}
    nurse.store.cursor = "not-a-cursor"
    reply = nurse.transport("POST", "/sync/v1/pull", {
        "protocol": 1, "client_id": nurse.client_id, "cursor": "not-a-cursor"})
    assert reply.body["reset"] is True
    nurse.pull()
    assert all(v.get("id") != "stale" for v in nurse.store.rows.values())
    first = device("nurse").transport("POST", "/sync/v1/pull", {
        "protocol": 1, "client_id": "fresh-device", "cursor": None})
    assert first.body["reset"] is False      # a first pull is not a reset


def test_a_change_of_role_resets_what_the_device_holds(world, register, device):
    pid = register(world.actor("registration_clerk"), identifiers=[
        {"system": "national-id", "value": "NID-555"}])
    nurse = device("nurse")
    nurse.pull()
    assert nurse.record("patient", pid)["identifiers"] == []
    db.session.add(Membership(id=new_id(), user_id=world.user("nurse").id,
                              clinic_id=world.clinics["A"].id, role="clinician"))
    db.session.commit()
    resets = []
    original = nurse.transport

    def watching(method, path, body):
        reply = original(method, path, body)
        resets.append(reply.body["reset"])
        return reply
    nurse.transport = watching
    nurse.pull()
    assert resets[0] is True
    assert nurse.record("patient", pid)["identifiers"][0]["value"] == "NID-555"


@pytest.mark.postgres
def test_sensitive_categories_reach_only_the_roles_that_need_them(world, write, register, device):
    pid = register(world.actor("registration_clerk"), identifiers=[
        {"system": "national-id", "value": "NID-777"}, {"system": "mrn", "value": "MRN-1"}])
    clinician = world.actor("clinician")
    hiv = write(clinician, "condition.add", "condition",
                {"patient_id": pid, "text": "HIV disease", "code": "B20"}).entity_id
    malaria = write(clinician, "condition.add", "condition",
                    {"patient_id": pid, "text": "Malaria", "code": "B54"}).entity_id
    depression = write(clinician, "condition.add", "condition",
                       {"patient_id": pid, "text": "Depression", "code": "F32.1"}).entity_id
    nurse, doctor, clerk = device("nurse"), device("clinician"), device("registration_clerk")
    for each in (nurse, doctor, clerk):
        each.pull()
    assert [i["system"] for i in nurse.record("patient", pid)["identifiers"]] == ["mrn"]
    assert len(held(nurse, "patient_identifier")) == 1
    assert held(nurse, "condition") == {malaria}
    assert held(doctor, "condition") == {hiv, malaria, depression}
    assert {i["value"] for i in clerk.record("patient", pid)["identifiers"]} == {"NID-777", "MRN-1"}
    # Later changes are filtered the same way.
    write(clinician, "condition.resolve", "condition", {}, entity_id=hiv, base_version=1)
    nurse.pull()
    assert held(nurse, "condition") == {malaria}


@pytest.fixture
def short_history(app):
    app.config["SYNC_HISTORY_DAYS"] = {"observation": 365}


def test_old_observations_stay_on_the_server(world, write, register, device, short_history):
    pid = register(world.actor("registration_clerk"))
    nurse_actor = world.actor("nurse")
    old = write(nurse_actor, "observation.record", "observation", {
        "patient_id": pid, "code": "8867-4", "value": 70, "unit": "/min",
        "effective_at": (utcnow() - timedelta(days=400)).isoformat()}).entity_id
    recent = write(nurse_actor, "observation.record", "observation", {
        "patient_id": pid, "code": "8867-4", "value": 71, "unit": "/min",
        "effective_at": utcnow().isoformat()}).entity_id
    nurse = device("nurse")
    nurse.pull()
    assert held(nurse, "observation") == {recent}
    assert db.session.get(Observation, old) is not None


def test_a_server_restored_from_backup_gets_back_what_devices_had_sent(
        app, world, device, database_urls, tmp_path, clinic_a):
    """Restore = copy the database files back; then `flask sync new-epoch`."""
    clerk = device("registration_clerk")
    kept = register(clerk, clinic_a, given_name="Before")
    clerk.push()
    clerk.pull()
    main_path = database_urls[0].removeprefix("sqlite:///")
    db.session.remove()
    db.engine.dispose()
    shutil.copy(main_path, tmp_path / "backup.db")
    lost = register(clerk, clinic_a, given_name="After")
    clerk.push()
    assert clerk.store.outbox == []             # acknowledged, then lost in the restore
    db.session.remove()
    db.engine.dispose()
    shutil.copy(tmp_path / "backup.db", main_path)
    result = app.test_cli_runner().invoke(args=["sync", "new-epoch"])
    assert result.exit_code == 0, result.output
    clerk.pull()                                # reset: refill, and re-send what was lost
    assert clerk.store.outbox, "the lost registration is queued again"
    clerk.sync()
    db.session.rollback()
    assert db.session.get(Patient, lost).given_name == "After"
    assert db.session.get(Patient, kept).given_name == "Before"
    assert {kept, lost} <= held(clerk, "patient")
    # Registering again was needed; nothing was applied twice.
    assert db.session.query(Patient).filter(Patient.given_name == "After").count() == 1


@pytest.mark.postgres
def test_a_visit_finished_long_ago_does_not_keep_a_patient_on_the_device(
        world, write, register, device, clinic_a):
    pid = register(world.actor("registration_clerk"))
    visit = write(world.actor("nurse"), "visit.start", "visit",
                  {"patient_id": pid, "clinic_id": clinic_a, "station": "triage"}).entity_id
    write(world.actor("nurse"), "visit.move", "visit", {"station": "done"}, entity_id=visit,
          base_version=1)
    age(Patient, pid, 400, "created_at")
    age(Visit, visit, 400, "started_at")
    nurse = device("nurse")
    nurse.pull()
    assert pid not in held(nurse, "patient")


@pytest.mark.postgres
def test_identifiers_given_at_registration_reach_devices_already_syncing(world, device,
                                                                         clinic_a):
    nurse, clerk = device("nurse"), device("registration_clerk")
    nurse.pull()
    pid = register(clerk, clinic_a, identifiers=[{"system": "mrn", "value": "MRN-42"}])
    clerk.push()
    nurse.pull()
    identifiers = [r for (e, _), r in nurse.store.rows.items() if e == "patient_identifier"]
    assert [(i["patient_id"], i["value"]) for i in identifiers] == [(pid, "MRN-42")]


def test_history_depth_is_configurable_per_category(monkeypatch, tmp_path):
    from app.config import ConfigError, build_config
    monkeypatch.setenv("SYNC_HISTORY_DAYS", "observation=30, note=400")
    assert build_config(str(tmp_path), {})["SYNC_HISTORY_DAYS"] == {"observation": 30, "note": 400}
    monkeypatch.setenv("SYNC_HISTORY_DAYS", "observation=a month")
    with pytest.raises(ConfigError):
        build_config(str(tmp_path), {})


def test_a_cursor_is_good_only_for_the_device_it_was_given_to(world, register, device):
    register(world.actor("registration_clerk"))
    first, second = device("nurse"), device("nurse")
    first.pull()
    reply = second.transport("POST", "/sync/v1/pull", {
        "protocol": 1, "client_id": second.client_id, "cursor": first.store.cursor})
    assert reply.body["reset"] is True


def test_a_pull_comes_compressed_to_a_client_that_accepts_it_and_plain_to_one_that_does_not(
        app, world, register, token_for):
    clerk = world.actor("registration_clerk")
    patients = {register(clerk, given_name=f"Compressed{i}") for i in range(12)}
    headers = {"Authorization": f"Bearer {token_for('nurse')}"}

    def pull(client_id: str, **extra) -> tuple[dict, bytes]:
        response = app.test_client().post("/sync/v1/pull", headers={**headers, **extra}, json={
            "protocol": 1, "client_id": client_id, "cursor": None, "limit": 1000})
        assert response.status_code == 200, response.get_data()[:300]
        return dict(response.headers), response.get_data()

    zipped_headers, zipped = pull("gzip-" + new_id(), **{"Accept-Encoding": "gzip"})
    plain_headers, plain = pull("plain-" + new_id())

    assert zipped_headers.get("Content-Encoding") == "gzip"
    assert "Content-Encoding" not in plain_headers
    answer = json.loads(gzip.decompress(zipped))
    assert {c["id"] for c in answer["changes"] if c["entity"] == "patient"} == patients
    assert answer["changes"] == json.loads(plain)["changes"]
    assert len(zipped) < len(plain) / 2


@pytest.mark.postgres
def test_a_colleagues_first_sync_holds_each_record_as_the_writer_was_answered(device, clinic_a):
    clerk, nurse = device("registration_clerk"), device("nurse")
    pid = register(clerk, clinic_a)
    clerk.push()
    visit_id = new_id()
    nurse.queue("visit.start", "visit", visit_id,
                {"patient_id": pid, "clinic_id": clinic_a, "station": "triage"})
    observe(nurse, pid, value=38.4, code="8310-5", unit="Cel", visit_id=visit_id)
    observe(nurse, pid, value="positive", code="LAB-MAL", unit="result")
    answered = {(a["entity"], a["entity_id"]): a["record"] for a in nurse.push()}
    assert all(a is not None for a in answered.values())

    colleague = device("clinician")
    colleague.pull()

    held_records = {key: colleague.store.rows[key] for key in answered}
    assert held_records == answered


@pytest.mark.postgres
def test_each_contact_is_recorded_on_the_device_and_a_tokens_use_to_the_minute(
        world, transport_for):
    from app.models import ApiToken, SyncClient as DeviceRow
    from tests.sync.conftest import post
    transport = transport_for("nurse")
    body = {"protocol": 1, "client_id": "contact-device-0001", "cursor": None,
            "telemetry": {"queue_depth": 3}}
    assert post(transport, "/sync/v1/pull", body).status == 200
    db.session.rollback()
    row = db.session.get(DeviceRow, "contact-device-0001")
    first_seen = row.last_seen_at
    assert row.last_pull_at == first_seen and row.last_push_at is None
    assert row.telemetry == {"queue_depth": 3} and row.user_id == world.user("nurse").id
    [token] = db.session.query(ApiToken).all()
    assert token.last_used_at is not None
    token.last_used_at = token.last_used_at - timedelta(seconds=30)
    half_a_minute_ago = token.last_used_at
    db.session.commit()

    body = {**body, "telemetry": {"queue_depth": 0}}
    assert post(transport, "/sync/v1/pull", body).status == 200
    db.session.expire_all()
    row = db.session.get(DeviceRow, "contact-device-0001")
    assert row.last_pull_at > first_seen and row.last_seen_at == row.last_pull_at
    assert row.telemetry == {"queue_depth": 0}
    assert db.session.get(ApiToken, token.id).last_used_at == half_a_minute_ago  # within a minute

    token = db.session.get(ApiToken, token.id)
    token.last_used_at = half_a_minute_ago - timedelta(minutes=1)
    db.session.commit()
    assert post(transport, "/sync/v1/pull", body).status == 200
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).last_used_at > half_a_minute_ago
