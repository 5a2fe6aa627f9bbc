"""Push: exactly once, in each device's order, with results that survive a lost answer."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from app.domain.ids import new_id
from app.extensions import db
from app.models import (AuditEvent, ChangeLog, Conflict, EntityHistory, MutationResult,
                        Observation, Patient, SyncClient)
from app.services import audit
from app.services.audit import AuditUnavailable
from sync_api.client import Reply, SyncClient as Device, Unreachable
from tests.sync.builders import VITAL_TIME, observe, push_body, register, wire


def observation_data(patient_id: str, value=72) -> dict:
    return {"patient_id": patient_id, "code": "8867-4", "value": value, "unit": "/min",
            "effective_at": VITAL_TIME}


def count(model) -> int:
    db.session.rollback()
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def last_seq(client_id: str) -> int:
    db.session.rollback()
    return db.session.get(SyncClient, client_id).last_seq


@pytest.fixture
def patient_id(world, register):
    return register(world.actor("registration_clerk"))


@pytest.mark.postgres
def test_a_devices_mutations_apply_in_order_and_last_seq_follows(device, world):
    clerk = device("registration_clerk")
    pid = register(clerk, world.clinics["A"].id)
    clerk.queue("patient.update", "patient", pid, {"phone": "0700 111"}, base={"phone": None})
    clerk.queue("patient.update", "patient", pid, {"phone": "0700 222"},
                base={"phone": "0700 111"})
    answers = clerk.push()
    assert [a["status"] for a in answers] == ["applied", "applied", "applied"]
    assert [a["seq"] for a in answers] == [1, 2, 3]
    assert [a["version"] for a in answers] == [1, 2, 3]
    db.session.rollback()
    assert db.session.get(Patient, pid).phone == "0700 222"
    assert last_seq(clerk.client_id) == 3
    assert clerk.store.outbox == []


@pytest.mark.postgres
def test_a_resent_batch_is_answered_from_stored_results_and_applies_nothing_again(
        transport_for, patient_id):
    nurse = transport_for("nurse")
    batch = push_body("tablet-0001", wire(new_id(), 1, "observation.record", "observation",
                                          new_id(), observation_data(patient_id)))
    first = nurse("POST", "/sync/v1/push", batch)
    again = nurse("POST", "/sync/v1/push", batch)
    assert first.status == again.status == 200
    assert first.body["results"][0]["status"] == "applied"
    replay = again.body["results"][0]
    assert replay["status"] == "duplicate"
    assert {k: replay[k] for k in ("mid", "seq", "version", "record")} == \
        {k: first.body["results"][0][k] for k in ("mid", "seq", "version", "record")}
    assert count(Observation) == 1
    assert again.body["last_seq"] == 1


class LosesAnswers:
    """The request reaches the server and commits; the answer never reaches the device."""

    def __init__(self, transport, lose: int):
        self.transport, self.lose = transport, lose

    def __call__(self, method, path, body) -> Reply:
        reply = self.transport(method, path, body)
        if self.lose > 0:
            self.lose -= 1
            raise Unreachable("connection reset after the request was sent")
        return reply


@pytest.mark.postgres
def test_an_answer_lost_after_commit_is_given_again_on_retry(transport_for, patient_id):
    device = Device(LosesAnswers(transport_for("nurse"), lose=1))
    oid = observe(device, patient_id, value=88)
    with pytest.raises(Unreachable):
        device.push()
    assert len(device.store.outbox) == 1  # the device cannot know it was applied
    answers = device.push()
    assert answers[0]["status"] == "duplicate"
    assert answers[0]["record"]["value"] == 88
    assert device.store.outbox == []
    assert count(Observation) == 1
    assert device.record("observation", oid)["value"] == 88


@pytest.mark.postgres
def test_a_gap_in_seq_answers_409_and_applies_nothing_after_it(transport_for, patient_id):
    nurse = transport_for("nurse")
    first = wire(new_id(), 1, "observation.record", "observation", new_id(),
                 observation_data(patient_id, 60))
    late = [wire(new_id(), seq, "observation.record", "observation", new_id(),
                 observation_data(patient_id, 60 + seq)) for seq in (3, 4)]
    reply = nurse("POST", "/sync/v1/push", push_body("tablet-0002", first, *late))
    assert reply.status == 409
    assert reply.body["error"] == "out_of_order"
    assert reply.body["expected_seq"] == 2
    assert [r["status"] for r in reply.body["results"]] == ["applied"]  # seq 1 was kept
    assert count(Observation) == 1
    assert last_seq("tablet-0002") == 1


def test_the_same_mid_with_another_payload_is_rejected_as_mid_reused(transport_for, patient_id):
    nurse = transport_for("nurse")
    mid, oid = new_id(), new_id()
    nurse("POST", "/sync/v1/push", push_body("tablet-0003", wire(
        mid, 1, "observation.record", "observation", oid, observation_data(patient_id, 70))))
    reply = nurse("POST", "/sync/v1/push", push_body("tablet-0003", wire(
        mid, 2, "observation.record", "observation", oid, observation_data(patient_id, 99))))
    result = reply.body["results"][0]
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "mid_reused"
    assert reply.body["last_seq"] == 2  # a rejection never blocks the queue
    db.session.rollback()
    assert db.session.get(Observation, oid).value_number == 70


def test_a_used_seq_sent_with_another_mid_is_rejected_as_seq_reused(transport_for, patient_id):
    nurse = transport_for("nurse")
    nurse("POST", "/sync/v1/push", push_body("tablet-0004", wire(
        new_id(), 1, "observation.record", "observation", new_id(), observation_data(patient_id))))
    reply = nurse("POST", "/sync/v1/push", push_body("tablet-0004", wire(
        new_id(), 1, "observation.record", "observation", new_id(), observation_data(patient_id))))
    assert reply.body["results"][0]["status"] == "rejected"
    assert reply.body["results"][0]["error"]["code"] == "seq_reused"
    assert count(Observation) == 1


@pytest.mark.postgres
def test_a_rejected_mutation_advances_last_seq_and_the_next_one_applies(device, patient_id):
    nurse = device("nurse")
    observe(nurse, new_id())                 # an unknown patient: rejected for good
    good = observe(nurse, patient_id, value=64)
    answers = nurse.push()
    assert [a["status"] for a in answers] == ["rejected", "applied"]
    assert answers[0]["error"]["code"] == "not_found"
    assert nurse.store.quarantine[0]["error"]["code"] == "not_found"
    assert last_seq(nurse.client_id) == 2
    assert nurse.record("observation", good)["value"] == 64
    # Sent again, the rejection is repeated (it was never applied), not called a duplicate.
    reply = nurse.transport("POST", "/sync/v1/push", push_body(
        nurse.client_id, nurse.store.quarantine[0]["mutation"]))
    assert reply.body["results"][0]["status"] == "rejected"


def test_data_that_breaks_its_schema_is_rejected_per_mutation(device, patient_id):
    nurse = device("nurse")
    observe(nurse, patient_id, unit="")      # a unit is required
    answers = nurse.push()
    assert answers[0]["status"] == "rejected"
    assert answers[0]["error"]["code"] == "invalid"
    assert answers[0]["error"]["problems"][0]["field"] == "unit"
    assert last_seq(nurse.client_id) == 1


@pytest.mark.postgres
def test_a_failed_audit_write_applies_nothing_and_answers_503(device, patient_id, monkeypatch):
    nurse = device("nurse")
    observe(nurse, patient_id)

    def broken(_entries):
        raise AuditUnavailable("audit database is down")
    monkeypatch.setattr("app.services.audit.append", broken)
    with pytest.raises(Unreachable) as failure:
        nurse.push()
    assert failure.value.retry_after == 2
    assert count(Observation) == 0
    assert db.session.execute(select(MutationResult).where(
        MutationResult.client_id == nurse.client_id)).first() is None
    assert db.session.get(SyncClient, nurse.client_id) is None  # not even the device row
    monkeypatch.undo()
    assert nurse.push()[0]["status"] == "applied"
    assert count(Observation) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite files have no server to lose
@pytest.mark.parametrize("bind", [None, "audit"], ids=["main", "audit"])
def test_a_push_after_the_databases_connections_were_cut_is_applied(device, patient_id, backend,
                                                                   bind):
    """A PostgreSQL restart (or a failover) ends every pooled connection; the next push must not
    be refused for a connection that is already gone."""
    nurse = device("nurse")
    observe(nurse, patient_id, value=61)
    assert nurse.push()[0]["status"] == "applied"  # the pool now holds a connection
    db.session.remove()
    database = db.engines[bind].url.database
    # A connection of its own, so the pool's are all among those cut.
    outside = create_engine(db.engines[None].url, poolclass=NullPool)
    with outside.connect() as admin:
        cut = admin.execute(text(
            "SELECT array_agg(pid) FILTER (WHERE pg_terminate_backend(pid)) "
            "FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
            {"name": database}).scalar()
        assert cut
        # As after a restart, the old server processes are gone before anyone reconnects.
        # (pg_stat_activity holds still within a transaction, hence the rollback each time.)
        deadline = time.monotonic() + 10
        while admin.rollback() or admin.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                            {"pids": cut}).scalar():
            assert time.monotonic() < deadline, "the cut connections' processes did not end"
            time.sleep(0.02)
    outside.dispose()
    observe(nurse, patient_id, value=62)
    assert nurse.push()[0]["status"] == "applied"
    assert count(Observation) == 2


def test_a_database_fault_mid_batch_answers_503_with_retry_after_and_applies_nothing(
        device, patient_id, monkeypatch):
    nurse = device("nurse")
    observe(nurse, patient_id, value=61)
    observe(nurse, patient_id, value=62)
    from app.services.handlers import HANDLERS
    real = HANDLERS["observation.record"]
    calls = []

    def flaky(ctx):
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(ctx)
    monkeypatch.setitem(HANDLERS, "observation.record", flaky)
    with pytest.raises(Unreachable):
        nurse.push()
    assert count(Observation) == 0
    monkeypatch.undo()
    assert [a["status"] for a in nurse.push()] == ["applied", "applied"]
    assert count(Observation) == 2


def test_a_client_id_belongs_to_one_user(transport_for, patient_id):
    body = push_body("shared-tablet-1", wire(new_id(), 1, "observation.record", "observation",
                                             new_id(), observation_data(patient_id)))
    assert transport_for("nurse")("POST", "/sync/v1/push", body).status == 200
    other = transport_for("clinician")("POST", "/sync/v1/push", body)
    assert other.status == 403
    assert other.body["error"] == "client_mismatch"


def test_the_author_is_the_authenticated_user_not_the_claimed_one(transport_for, world,
                                                                  patient_id):
    oid = new_id()
    transport_for("nurse")("POST", "/sync/v1/push", push_body("tablet-0005", wire(
        new_id(), 1, "observation.record", "observation", oid, observation_data(patient_id),
        author="clinician.a", client_ts="2020-01-01T00:00:00Z")))
    db.session.rollback()
    assert db.session.get(Observation, oid).created_by == world.user("nurse").id
    stored = db.session.execute(select(MutationResult)).scalars().all()[-1]
    assert stored.client_ts == "2020-01-01T00:00:00Z"  # kept as the device's claim


def test_each_applied_mutation_is_audited_with_its_device(device, patient_id):
    nurse = device("nurse")
    observe(nurse, patient_id)
    nurse.push()
    db.engines["audit"].dispose()
    with db.engines["audit"].connect() as conn:
        event = conn.execute(select(AuditEvent).where(
            AuditEvent.action == "mutation.observation.record")).one()
    assert event.device == nurse.client_id
    assert event.patient_id == patient_id
    assert event.outcome == "applied"


@pytest.mark.postgres
def test_two_pushes_of_one_client_at_once_apply_each_mutation_once(app, transport_for,
                                                                   patient_id):
    batch = push_body("tablet-race", *[wire(new_id(), seq, "observation.record", "observation",
                                            new_id(), observation_data(patient_id, 60 + seq))
                                       for seq in range(1, 21)])
    transports = [transport_for("nurse") for _ in range(2)]
    replies: list[Reply] = []

    def send(transport):
        with app.app_context():
            replies.append(transport("POST", "/sync/v1/push", batch))
    threads = [threading.Thread(target=send, args=(t,)) for t in transports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status for r in replies) == [200, 200]
    statuses = sorted(r.body["results"][0]["status"] for r in replies)
    assert statuses == ["applied", "duplicate"]
    assert count(Observation) == 20
    assert last_seq("tablet-race") == 20


def test_a_rejected_mutation_sent_again_at_a_new_seq_is_rejected_again(transport_for):
    nurse = transport_for("nurse")
    bad = wire(new_id(), 1, "observation.record", "observation", new_id(),
               observation_data(new_id()))
    reply = nurse("POST", "/sync/v1/push", push_body("tablet-0006", bad, {**bad, "seq": 2}))
    assert [r["status"] for r in reply.body["results"]] == ["rejected", "rejected"]
    assert reply.body["results"][1]["error"]["code"] == "not_found"


def test_answers_carry_records_as_the_device_may_hold_them(device, world, register):
    pid = register(world.actor("registration_clerk"), identifiers=[
        {"system": "national-id", "value": "NID-SECRET"}, {"system": "mrn", "value": "MRN-9"}])
    nurse = device("nurse")
    nurse.queue("patient.update", "patient", pid, {"phone": "0733 333"}, base={"phone": None})
    answer = nurse.push()[0]
    assert answer["status"] == "applied"
    assert [i["system"] for i in answer["record"]["identifiers"]] == ["mrn"]
    assert "NID-SECRET" not in str(nurse.store.rows)


def test_another_devices_mutation_id_is_not_replayed_to_this_one(transport_for, patient_id):
    mid, oid = new_id(), new_id()
    mutation = wire(mid, 1, "observation.record", "observation", oid,
                    observation_data(patient_id))
    transport_for("nurse")("POST", "/sync/v1/push", push_body("tablet-0007", mutation))
    other = transport_for("nurse")("POST", "/sync/v1/push", push_body("tablet-0008", mutation))
    assert other.body["results"][0]["status"] == "rejected"
    assert other.body["results"][0]["error"]["code"] == "mid_reused"
    assert "record" not in other.body["results"][0]


@pytest.mark.postgres
def test_a_record_id_already_taken_is_refused_and_the_rest_of_the_batch_applies(
        transport_for, patient_id):
    nurse = transport_for("nurse")
    taken = new_id()
    first = nurse("POST", "/sync/v1/push", push_body("tablet-0001", wire(
        new_id(), 1, "observation.record", "observation", taken, observation_data(patient_id))))
    assert first.body["results"][0]["status"] == "applied"

    other = transport_for("clinician")
    batch = push_body("tablet-0002", *[
        wire(new_id(), seq, "observation.record", "observation", entity_id,
             observation_data(patient_id, value=value))
        for seq, entity_id, value in ((1, new_id(), 80), (2, taken, 90), (3, new_id(), 100))])
    answer = other("POST", "/sync/v1/push", batch)

    assert answer.status == 200
    assert [r["status"] for r in answer.body["results"]] == ["applied", "rejected", "applied"]
    assert answer.body["results"][1]["error"]["code"] == "entity_exists"
    assert answer.body["last_seq"] == 3
    db.session.rollback()
    values = sorted(o.value_number for o in db.session.scalars(select(Observation)))
    assert values == [72, 80, 100]  # the first device's reading is untouched


@pytest.mark.postgres
def test_a_visit_started_in_a_batch_takes_the_readings_that_follow_it(transport_for, patient_id,
                                                                      world):
    nurse = transport_for("nurse")
    visit_id, reading_id = new_id(), new_id()
    answer = nurse("POST", "/sync/v1/push", push_body(
        "tablet-0001",
        wire(new_id(), 1, "visit.start", "visit", visit_id,
             {"patient_id": patient_id, "clinic_id": world.clinics["A"].id, "station": "triage"}),
        wire(new_id(), 2, "observation.record", "observation", reading_id,
             {**observation_data(patient_id), "visit_id": visit_id})))

    assert [r["status"] for r in answer.body["results"]] == ["applied", "applied"]
    visit, reading = (r["record"] for r in answer.body["results"])
    assert visit["status"] == "in-progress" and visit["station"] == "triage"
    assert reading["visit_id"] == visit_id
    db.session.rollback()
    assert db.session.get(Observation, reading_id).visit_id == visit_id


@pytest.mark.postgres
def test_a_patient_changed_in_one_batch_lists_every_identifier_it_was_given(device, world):
    clerk = device("registration_clerk")
    pid = register(clerk, world.clinics["A"].id,
                   identifiers=[{"system": "mrn", "value": "MRN-5001"}])
    clerk.push()
    clerk.queue("patient.update", "patient", pid, {"phone": "0700 333"}, base={"phone": None},
                base_version=1)
    clerk.queue("patient.identifier.add", "patient_identifier", new_id(),
                {"patient_id": pid, "system": "insurance", "value": "INS-77"})
    clerk.queue("patient.update", "patient", pid, {"address": "Riverside"},
                base={"address": None}, base_version=3)
    answers = clerk.push()

    assert [a["status"] for a in answers] == ["applied", "applied", "applied"]
    latest = answers[-1]["record"]
    assert (latest["phone"], latest["address"], latest["version"]) == ("0700 333", "Riverside", 4)
    assert sorted(i["value"] for i in latest["identifiers"]) == ["INS-77", "MRN-5001"]



@pytest.mark.postgres
def test_edits_of_a_batch_applied_again_one_by_one_change_the_patient_once_each(device, world):
    clerk = device("registration_clerk")
    pid = register(clerk, world.clinics["A"].id)
    clerk.push()
    clerk.queue("patient.update", "patient", pid, {"phone": "0700 111"}, base={"phone": None},
                base_version=1)
    clerk.queue("patient.update", "patient", pid, {"address": "Hill road"},
                base={"address": None}, base_version=2)
    clerk.queue("patient.update", "patient", new_id(), {"phone": "0700 999"},
                base={"phone": None}, base_version=1)  # no such patient: refused
    clerk.queue("patient.update", "patient", pid, {"phone": "0700 222"},
                base={"phone": "0700 111"}, base_version=3)
    answers = clerk.push()

    assert [a["status"] for a in answers] == ["applied", "applied", "rejected", "applied"]
    assert [a.get("version") for a in answers] == [2, 3, None, 4]
    assert (answers[-1]["record"]["phone"], answers[-1]["record"]["address"]) == (
        "0700 222", "Hill road")
    db.session.rollback()
    patient = db.session.get(Patient, pid)
    assert (patient.phone, patient.address, patient.version) == ("0700 222", "Hill road", 4)
    kept = db.session.scalars(select(EntityHistory.version).where(
        EntityHistory.entity_id == pid).order_by(EntityHistory.version)).all()
    assert kept == [1, 2, 3, 4]


@pytest.mark.postgres
def test_a_base_holding_a_number_too_big_for_64_bits_is_kept_with_its_conflict(device, world):
    clerk = device("registration_clerk")
    pid = register(clerk, world.clinics["A"].id)
    clerk.push()
    huge = 2 ** 70
    clerk.queue("patient.update", "patient", pid, {"phone": "0700 111"}, base={"phone": huge},
                base_version=1)
    answers = clerk.push()

    assert [a["status"] for a in answers] == ["conflict"]
    assert answers[0]["conflict"]["fields"] == ["phone"]
    db.session.rollback()
    kept = db.session.scalars(select(Conflict).where(Conflict.entity_id == pid)).one()
    assert kept.base_values == {"phone": huge}


@pytest.mark.postgres
def test_a_patient_changed_in_one_batch_no_longer_lists_an_identifier_retired_before(device,
                                                                                    world):
    clerk = device("registration_clerk")
    pid = register(clerk, world.clinics["A"].id,
                   identifiers=[{"system": "mrn", "value": "MRN-6001"},
                                {"system": "insurance", "value": "INS-6002"}])
    registered = clerk.push()[0]["record"]
    mrn = next(i["id"] for i in registered["identifiers"] if i["system"] == "mrn")
    clerk.queue("patient.identifier.retire", "patient_identifier", mrn, {"reason": "typed wrongly"},
                base_version=1)
    clerk.queue("patient.update", "patient", pid, {"phone": "0700 444"}, base={"phone": None},
                base_version=2)
    answers = clerk.push()

    assert [a["status"] for a in answers] == ["applied", "applied"]
    assert [i["value"] for i in answers[-1]["record"]["identifiers"]] == ["INS-6002"]
    db.session.rollback()
    history = db.session.execute(select(EntityHistory.record).where(
        EntityHistory.entity == "patient", EntityHistory.entity_id == pid,
        EntityHistory.version == 3)).scalar_one()
    assert [i["system"] for i in history["identifiers"]] == ["insurance"]

def readings(patient_id: str, first_seq: int, values: list[int]) -> list[dict]:
    return [wire(new_id(), seq, "observation.record", "observation", new_id(),
                 observation_data(patient_id, value))
            for seq, value in enumerate(values, start=first_seq)]


def rows_of(model, **where) -> int:
    db.session.rollback()
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return db.session.execute(query).scalar_one()


@pytest.mark.postgres
def test_a_batch_mixing_resent_and_new_mutations_applies_only_the_new_ones(transport_for,
                                                                          patient_id):
    nurse = transport_for("nurse")
    sent = readings(patient_id, 1, [61, 62, 63])
    first = nurse("POST", "/sync/v1/push", push_body("tablet-mixed", *sent))
    assert [r["status"] for r in first.body["results"]] == ["applied"] * 3

    more = readings(patient_id, 4, [64, 65])
    again = nurse("POST", "/sync/v1/push", push_body("tablet-mixed", *sent, *more))

    assert again.status == 200
    answers = again.body["results"]
    assert [r["status"] for r in answers] == ["duplicate"] * 3 + ["applied"] * 2
    assert [r["record"] for r in answers[:3]] == [r["record"] for r in first.body["results"]]
    assert [r["record"]["value"] for r in answers] == [61, 62, 63, 64, 65]
    assert again.body["last_seq"] == 5
    # Each reading once, with one version in its history, one change and one stored answer.
    assert rows_of(Observation) == 5
    assert rows_of(EntityHistory, entity="observation") == 5
    assert rows_of(ChangeLog, entity="observation") == 5
    assert rows_of(MutationResult, client_id="tablet-mixed") == 5


@pytest.mark.postgres
def test_a_mid_sent_twice_in_one_batch_is_applied_once_and_answered_from_the_first(
        transport_for, patient_id):
    nurse = transport_for("nurse")
    reading = readings(patient_id, 1, [70])[0]
    answer = nurse("POST", "/sync/v1/push", push_body(
        "tablet-twice", reading, {**reading, "seq": 2}, *readings(patient_id, 3, [71])))

    assert [r["status"] for r in answer.body["results"]] == ["applied", "duplicate", "applied"]
    assert answer.body["results"][1]["record"] == answer.body["results"][0]["record"]
    assert answer.body["last_seq"] == 3
    assert rows_of(Observation) == 2


@pytest.mark.postgres
@pytest.mark.parametrize("resent_at", [4, 3], ids=["a new seq", "a seq taken in the same batch"])
def test_a_mid_already_answered_sent_again_under_another_seq_is_answered_from_its_answer(
        transport_for, patient_id, resent_at):
    nurse = transport_for("nurse")
    kept, again = readings(patient_id, 1, [70, 72])
    before = nurse("POST", "/sync/v1/push", push_body("tablet-first", kept, again))
    later, _, last = readings(patient_id, 3, [80, 81, 82])
    answer = nurse("POST", "/sync/v1/push", push_body(
        "tablet-first", later, {**again, "seq": resent_at}, {**last, "seq": resent_at + 1}))
    elsewhere = nurse("POST", "/sync/v1/push", push_body("tablet-other", {**kept, "seq": 1}))

    assert [r["status"] for r in answer.body["results"]] == ["applied", "duplicate", "applied"]
    assert answer.body["results"][1]["record"] == before.body["results"][1]["record"]
    assert answer.body["last_seq"] == resent_at + 1
    assert elsewhere.body["results"][0]["status"] == "rejected"
    assert elsewhere.body["results"][0]["error"]["code"] == "mid_reused"
    assert rows_of(Observation) == 4


@pytest.mark.postgres
def test_one_record_id_twice_in_a_batch_applies_the_first_and_refuses_the_second(
        transport_for, patient_id):
    nurse = transport_for("nurse")
    first, second, third = readings(patient_id, 1, [80, 81, 82])
    second = {**second, "entity_id": first["entity_id"]}
    answer = nurse("POST", "/sync/v1/push", push_body("tablet-same-id", first, second, third))

    assert [r["status"] for r in answer.body["results"]] == ["applied", "rejected", "applied"]
    assert answer.body["results"][1]["error"]["code"] == "entity_exists"
    db.session.rollback()
    assert db.session.get(Observation, first["entity_id"]).value_number == 80
    assert rows_of(EntityHistory, entity_id=first["entity_id"]) == 1


@pytest.mark.postgres
def test_the_audit_chain_verifies_after_batched_pushes_one_of_them_refused_in_part(
        transport_for, patient_id):
    nurse = transport_for("nurse")
    clean = readings(patient_id, 1, [90, 91, 92])
    refused = wire(new_id(), 4, "observation.record", "observation", new_id(),
                   observation_data(new_id()))  # a patient that does not exist
    assert nurse("POST", "/sync/v1/push", push_body("tablet-audit", *clean)).status == 200
    answer = nurse("POST", "/sync/v1/push", push_body(
        "tablet-audit", refused, *readings(patient_id, 5, [93, 94])))
    assert [r["status"] for r in answer.body["results"]] == ["rejected", "applied", "applied"]

    db.engines["audit"].dispose()
    with db.engines["audit"].connect() as conn:
        outcomes = conn.execute(select(AuditEvent.outcome).where(
            AuditEvent.device == "tablet-audit").order_by(AuditEvent.id)).scalars().all()
    assert outcomes == ["applied"] * 3 + ["rejected"] + ["applied"] * 2
    report = audit.verify()
    assert report.ok, report.problem


@pytest.mark.postgres
def test_a_colleague_already_in_sync_gets_each_reading_as_the_writer_was_answered(device,
                                                                                 world):
    clinic_a = world.clinics["A"].id
    clerk, nurse, colleague = device("registration_clerk"), device("nurse"), device("clinician")
    pid = register(clerk, clinic_a)
    clerk.push()
    colleague.pull()  # from here on, the colleague's changes come from the log and history
    observe(nurse, pid, value=38.4, code="8310-5", unit="Cel")
    observe(nurse, pid, value=72, code="8867-4", unit="/min")
    observe(nurse, pid, value="positive", code="LAB-MAL", unit="result")
    answered = {(a["entity"], a["entity_id"]): a["record"] for a in nurse.push()}

    colleague.pull()

    assert {key: colleague.store.rows[key] for key in answered} == answered
    assert sorted(str(r["value"]) for r in answered.values()) == ["38.4", "72.0", "positive"]


@pytest.mark.postgres
def test_readings_given_as_whole_and_decimal_numbers_in_one_batch_keep_their_values(
        transport_for, patient_id):
    nurse = transport_for("nurse")
    values = [36, 36.6, 37, 38.25, 35, 36.5, 39, 40.1, 41, 36.9, 37, 37.5]  # more than a few
    answer = nurse("POST", "/sync/v1/push", push_body("tablet-numbers",
                                                      *readings(patient_id, 1, values)))
    assert [r["status"] for r in answer.body["results"]] == ["applied"] * len(values)
    db.session.rollback()
    stored = sorted(o.value_number for o in db.session.scalars(select(Observation)))
    assert stored == sorted(values)
