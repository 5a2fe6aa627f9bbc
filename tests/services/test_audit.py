"""The audit log: every read and write of a chart is recorded before it is answered, the
hash chain shows any edit, deletion or insertion, the database refuses changes, and when
the log cannot be written nothing is shown or changed."""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func, insert, select, update

from app.crypto.audit_signing import CheckpointSigner
from app.database import configure_engine
from app.domain import roles as r
from app.extensions import db
from app.models import (AuditCheckpoint, AuditEvent, ChangeLog, EntityHistory, MutationResult,
                        Note, Observation, Patient)
from app.models.records import to_json_value
from app.services import audit

pytestmark = pytest.mark.postgres

EVENTS = AuditEvent.__table__
PATIENT = {"given_name": "Zawadi", "family_name": "Wanjiru", "phone": "0733 456 789",
           "address": "Mango Street 12"}


def audit_rows() -> list[dict]:
    """The log as stored, read on a short connection of its own (on SQLite any audit
    transaction holds the write lock, which the app needs for its next entry)."""
    with db.engines["audit"].connect() as conn:
        return [dict(row) for row in conn.execute(select(EVENTS).order_by(EVENTS.c.id)).mappings()]


def on_audit_db(*statements) -> None:
    with db.engines["audit"].begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement) if isinstance(statement, str) else statement)


def disable_triggers() -> None:
    if db.engines["audit"].dialect.name == "postgresql":
        on_audit_db("ALTER TABLE audit_event DISABLE TRIGGER USER")
    else:
        on_audit_db("DROP TRIGGER audit_event_no_update", "DROP TRIGGER audit_event_no_delete")


def verify_cli(app):
    return app.test_cli_runner().invoke(args=["audit", "verify"])


def count(model) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def patient_id(world, register) -> str:
    return register(world.actor(r.REGISTRATION_CLERK), **PATIENT)


@pytest.fixture
def some_history(app, world, patient_id, client_for) -> list[dict]:
    """A few people at work: reads, a write, a search. Returns the log it leaves."""
    nurse = client_for(world.user(r.NURSE, "A"))
    clinician = client_for(world.user(r.CLINICIAN, "A"))
    assert nurse.get(f"/patients/{patient_id}").status_code == 200
    assert nurse.post(f"/patients/{patient_id}/vitals", data={"heart_rate": "72"}).status_code == 303
    assert clinician.get("/patients?q=Wanjiru").status_code == 200
    assert clinician.get(f"/patients/{patient_id}").status_code == 200
    assert clinician.get(f"/patients/{patient_id}/notes").status_code == 200
    rows = audit_rows()
    assert len(rows) >= 5
    return rows


# --- What is recorded ------------------------------------------------------------------------

def test_reading_a_chart_records_who_where_whom_and_what(app, world, patient_id, client_for):
    clinician = world.user(r.CLINICIAN, "A")
    response = client_for(clinician).get(f"/patients/{patient_id}")
    assert response.status_code == 200
    [event] = [e for e in audit_rows() if e["action"] == "patient.read"]
    assert event["user_id"] == clinician.id and event["username"] == clinician.username
    assert event["role"] == r.CLINICIAN
    assert event["clinic_id"] == world.clinics["A"].id
    assert event["patient_id"] == patient_id
    assert event["outcome"] == "success"
    assert event["request_id"] == response.headers["X-Request-ID"]


def test_writing_through_a_form_records_the_write(app, world, patient_id, client_for):
    nurse = world.user(r.NURSE, "A")
    response = client_for(nurse).post(f"/patients/{patient_id}/notes", data={"text": "Seen."})
    assert response.status_code == 303
    note_id = db.session.execute(select(Note.id)).scalar_one()
    db.session.rollback()
    [event] = [e for e in audit_rows() if e["action"] == "mutation.note.write"]
    assert (event["user_id"], event["role"], event["clinic_id"], event["patient_id"]) == (
        nurse.id, r.NURSE, world.clinics["A"].id, patient_id)
    assert event["outcome"] == "applied"
    assert event["detail"]["entity"] == "note" and event["detail"]["entity_id"] == note_id


def test_a_refused_write_is_recorded_as_refused(app, world, patient_id, client_for):
    pharmacist = world.user(r.PHARMACIST, "A")
    response = client_for(pharmacist).post(f"/patients/{patient_id}/vitals",
                                           data={"heart_rate": "72"})
    assert response.status_code == 422
    [event] = [e for e in audit_rows() if e["action"] == "mutation.observation.record"]
    assert (event["outcome"], event["role"], event["patient_id"]) == (
        "rejected", r.PHARMACIST, patient_id)
    assert event["detail"]["error"] == "forbidden"


def test_failed_sign_in_is_recorded(app, world):
    nurse = world.user(r.NURSE, "A")
    app.test_client().post("/login", data={"username": nurse.username, "password": "guess"})
    [event] = [e for e in audit_rows() if e["action"] == "sign_in"]
    assert (event["outcome"], event["user_id"], event["detail"]["reason"]) == (
        "denied", nurse.id, "bad_credentials")


# --- The chain -------------------------------------------------------------------------------

def test_verify_reports_an_intact_chain(app, some_history):
    result = verify_cli(app)
    assert result.exit_code == 0, result.output
    assert f"Audit chain intact: {len(some_history)} rows checked." in result.output


def test_verify_names_an_edited_row(app, some_history):
    target = some_history[2]["id"]
    disable_triggers()
    on_audit_db(update(EVENTS).where(EVENTS.c.id == target).values(detail={"q": "nothing"}))
    result = verify_cli(app)
    assert result.exit_code != 0
    assert f"Audit chain broken at row {target}:" in result.output
    assert "edited" in result.output
    assert audit.verify().first_bad_id == target


def test_verify_names_a_deleted_row(app, some_history):
    target = some_history[1]["id"]
    disable_triggers()
    on_audit_db(delete(EVENTS).where(EVENTS.c.id == target))
    result = verify_cli(app)
    assert result.exit_code != 0
    assert f"Audit chain broken at row {target}:" in result.output and "deleted" in result.output
    assert audit.verify().first_bad_id == target


def test_verify_names_a_forged_row(app, some_history):
    last = some_history[-1]
    forged = {**last, "id": last["id"] + 1, "username": "someone.else", "prev_hash": last["hash"],
              "hash": "f" * 64}
    on_audit_db(insert(EVENTS).values(**forged))  # appending needs no trigger to be disabled
    result = verify_cli(app)
    assert result.exit_code != 0
    assert f"Audit chain broken at row {forged['id']}:" in result.output
    assert audit.verify().first_bad_id == forged["id"]


def test_verify_names_a_replaced_row_even_with_a_recomputed_hash(app, some_history):
    """Rewriting a row and its own hash still breaks the link to the row after it."""
    target = some_history[1]
    changed = {**target, "action": "patient.search", "patient_id": None}
    changed["hash"] = audit.chain_hash(target["prev_hash"], changed)
    disable_triggers()
    on_audit_db(update(EVENTS).where(EVENTS.c.id == target["id"]).values(
        action=changed["action"], patient_id=None, hash=changed["hash"]))
    report = audit.verify()
    assert not report.ok and report.first_bad_id == target["id"] + 1


def test_new_entries_after_a_verified_chain_keep_it_intact(app, some_history, world, client_for,
                                                         patient_id):
    assert verify_cli(app).exit_code == 0
    client_for(world.user(r.LAB, "A")).get(f"/patients/{patient_id}")
    result = verify_cli(app)
    assert result.exit_code == 0 and f"{len(some_history) + 1} rows checked" in result.output


def test_entries_with_any_text_in_them_are_chained_so_that_verify_holds(app):
    details = [{"note": 'quote " and backslash \\ and tab \t', "n": 3, "x": 0.1},
               {"name": "Wanjirũ Kamau 李", "nested": {"list": [1, None, True], "id": 7}},
               {}]
    for n, detail in enumerate(details):
        audit.append([audit.AuditEntry(action="test.read", username=f"nurse ✓ {n}",
                                       role="nurse, clinician", detail=detail)])
    rows = [row for row in audit_rows() if row["action"] == "test.read"]
    assert [row["detail"] for row in rows] == details
    assert audit.verify().ok


def test_rows_hashed_before_ids_were_split_out_still_verify():
    """The hash of every stored row is sha256(previous hash + the row's canonical JSON):
    rows written that way must still verify."""
    row = {"id": 12, "at": datetime(2026, 11, 22, 9, 30, 0, 120000, tzinfo=timezone.utc),
           "user_id": "u-1", "username": "Amina", "role": "nurse", "clinic_id": "c-1",
           "patient_id": None, "action": "chart.read", "outcome": "success", "device": "tab",
           "break_glass_id": None, "request_id": "r-9", "detail": {"id": 5, "é": "ü"}}
    body = {name: to_json_value(row[name]) for name in audit.CHAINED_FIELDS}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert audit.chain_hash("ab" * 32, row) == hashlib.sha256(
        ("ab" * 32 + canonical).encode()).hexdigest()


# --- The database refuses changes ----------------------------------------------------------

@pytest.mark.parametrize("change", [
    update(EVENTS).where(EVENTS.c.id == 1).values(outcome="denied"),
    delete(EVENTS).where(EVENTS.c.id == 1),
], ids=["update", "delete"])
def test_the_database_refuses_to_change_the_log(app, some_history, change):
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        on_audit_db(change)
    assert audit_rows() == some_history
    assert verify_cli(app).exit_code == 0


def test_the_database_refuses_to_empty_the_log(app, some_history):
    # PostgreSQL's TRUNCATE skips row triggers, so it has a trigger of its own; a DELETE
    # without WHERE is SQLite's truncate.
    on_postgresql = db.engines["audit"].dialect.name == "postgresql"
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        on_audit_db("TRUNCATE audit_event" if on_postgresql else "DELETE FROM audit_event")
    assert audit_rows() == some_history


# --- Without a working log, nothing is shown or changed ----------------------------------------

def _unreachable(monkeypatch, tmp_path):
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'audit.db'}")
    monkeypatch.setattr(audit, "_engine", lambda: broken)


def _table_dropped(monkeypatch, tmp_path):
    on_audit_db("DROP TABLE audit_event")


@pytest.fixture(params=[_unreachable, _table_dropped], ids=["unreachable", "table-dropped"])
def broken_audit(request, monkeypatch, tmp_path):
    return lambda: request.param(monkeypatch, tmp_path)


def shows_patient(body: str) -> list[str]:
    return [value for value in PATIENT.values() if value in body]


def test_chart_is_not_shown_when_its_read_cannot_be_recorded(app, world, patient_id, client_for,
                                                             broken_audit):
    client = client_for(world.user(r.CLINICIAN, "A"))
    broken_audit()
    for url in (f"/patients/{patient_id}", f"/patients/{patient_id}/edit",
                "/patients?q=Wanjiru", f"/patients/{patient_id}/vitals"):
        response = client.get(url)
        body = response.get_data(as_text=True)
        assert response.status_code == 503, url
        assert "access log is unavailable" in body
        assert not shows_patient(body), (url, shows_patient(body))


def test_form_writes_nothing_when_it_cannot_be_recorded(app, world, patient_id, client_for,
                                                        broken_audit):
    nurse = client_for(world.user(r.NURSE, "A"))
    before = {model: count(model) for model in (Patient, Note, Observation, ChangeLog,
                                                EntityHistory, MutationResult)}
    broken_audit()
    posts = [(f"/patients/{patient_id}/notes", {"text": "Seen.", "sign": "yes"}),
             (f"/patients/{patient_id}/vitals", {"heart_rate": "72", "temperature": "37.2"}),
             ("/patients/new", {"given_name": "New", "family_name": "Person", "sex": "male",
                                "birth_date": "2001-01-01", "confirm_new": "yes"})]
    for url, data in posts:
        response = nurse.post(url, data=data)
        assert response.status_code == 503, url
        assert not shows_patient(response.get_data(as_text=True))
    assert {model: count(model) for model in before} == before



# --- Signed checkpoints ----------------------------------------------------------------------

CHECKPOINTS = AuditCheckpoint.__table__


def checkpoint_cli(app):
    return app.test_cli_runner().invoke(args=["audit", "checkpoint"])


def checkpoint_rows() -> list[dict]:
    with db.engines["audit"].connect() as conn:
        return [dict(r) for r in conn.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.id))
                .mappings()]


def disable_checkpoint_triggers() -> None:
    if db.engines["audit"].dialect.name == "postgresql":
        on_audit_db("ALTER TABLE audit_checkpoint DISABLE TRIGGER USER")
    else:
        on_audit_db("DROP TRIGGER audit_checkpoint_no_update",
                    "DROP TRIGGER audit_checkpoint_no_delete")


def rewrite_consistently(rows: list[dict], target_id: int, **changes) -> None:
    """What someone with write access to the table can do: change a row and recompute every
    hash from there on, so the chain by itself still verifies."""
    disable_triggers()
    prev_hash = audit.GENESIS_HASH
    statements = []
    for row in rows:
        if row["id"] == target_id:
            row = {**row, **changes}
        if row["id"] >= target_id:
            row = {**row, "prev_hash": prev_hash}
            row["hash"] = audit.chain_hash(prev_hash, row)
            statements.append(update(EVENTS).where(EVENTS.c.id == row["id"]).values(
                **{k: v for k, v in row.items() if k != "id"}))
        prev_hash = row["hash"]
    on_audit_db(*statements)


def test_a_consistently_rewritten_chain_is_caught_by_its_signed_checkpoint(app, some_history):
    signed = checkpoint_cli(app)
    assert signed.exit_code == 0 and "Checkpoint 1: row" in signed.output, signed.output
    last = some_history[-1]["id"]
    rewrite_consistently(some_history, 2, username="someone.else")
    assert audit._walk(5000, {}).ok  # the hash chain alone no longer sees it

    result = verify_cli(app)
    assert result.exit_code == 1
    assert f"Audit chain broken at row {last}:" in result.output
    assert f"does not match signed checkpoint 1: rows 1 to {last} were rewritten" in result.output


def test_a_checkpoint_narrows_a_rewrite_down_to_the_rows_after_the_previous_one(
        app, some_history, world, client_for, patient_id):
    checkpoint_cli(app)
    client_for(world.user(r.LAB, "A")).get(f"/patients/{patient_id}")
    client_for(world.user(r.LAB, "A")).get(f"/patients/{patient_id}")
    checkpoint_cli(app)
    rows = audit_rows()
    first_pin, second_pin = (c["event_id"] for c in checkpoint_rows())
    rewrite_consistently(rows, first_pin + 2, outcome="denied")
    report = audit.verify()
    assert (report.ok, report.first_bad_id) == (False, second_pin)
    assert f"rows {first_pin + 1} to {second_pin} were rewritten" in report.problem


def test_a_forged_or_edited_checkpoint_signature_is_caught(app, some_history):
    checkpoint_cli(app)
    [real] = checkpoint_rows()
    forged = {**real, "id": 2, "signature": real["signature"][:-4] + "AAA="}
    on_audit_db(insert(CHECKPOINTS).values(**forged))
    result = verify_cli(app)
    assert result.exit_code == 1
    assert "Audit checkpoint 2 is broken:" in result.output and "forged" in result.output


def test_editing_a_checkpoint_to_match_a_rewritten_chain_breaks_its_signature(app, some_history):
    checkpoint_cli(app)
    rewrite_consistently(some_history, 1, action="nothing.happened")
    disable_checkpoint_triggers()
    on_audit_db(update(CHECKPOINTS).values(event_hash=audit_rows()[-1]["hash"]))
    result = verify_cli(app)
    assert result.exit_code == 1 and "Audit checkpoint 1 is broken:" in result.output


def test_a_checkpoint_signed_by_an_unknown_key_is_caught(app, some_history):
    stranger = CheckpointSigner(Ed25519PrivateKey.generate(), [])
    last = some_history[-1]
    row = {"id": 1, "event_id": last["id"], "event_hash": last["hash"], "at": last["at"],
           "key_id": stranger.key_id}
    row["signature"] = stranger.sign(audit.checkpoint_message(row))
    on_audit_db(insert(CHECKPOINTS).values(**row))
    result = verify_cli(app)
    assert result.exit_code == 1
    assert f"checkpoint 1 is signed by key {stranger.key_id}, which is not among" in result.output


def test_checkpoints_of_a_retired_signing_key_verify_while_its_public_key_is_configured(
        app, some_history, world, client_for, patient_id):
    checkpoint_cli(app)
    old_public = audit.signer()._public[audit.signer().key_id]
    app.config["AUDIT_SIGNING_KEY"] = base64.b64encode(b"\x07" * 32).decode()
    client_for(world.user(r.LAB, "A")).get(f"/patients/{patient_id}")
    checkpoint_cli(app)
    assert len({c["key_id"] for c in checkpoint_rows()}) == 2
    assert verify_cli(app).exit_code == 1  # the old key is no longer known...
    app.config["AUDIT_VERIFY_KEYS"] = base64.b64encode(old_public.public_bytes_raw()).decode()
    result = verify_cli(app)
    assert result.exit_code == 0 and "2 signed checkpoints match" in result.output  # ...now it is


def test_rows_cut_off_the_end_after_a_checkpoint_are_caught(app, some_history):
    checkpoint_cli(app)
    last = some_history[-1]["id"]
    disable_triggers()
    on_audit_db(delete(EVENTS).where(EVENTS.c.id >= last - 1))
    result = verify_cli(app)
    assert result.exit_code == 1
    assert f"Audit chain broken at row {last - 1}:" in result.output and "cut off" in result.output


@pytest.mark.parametrize("app_overrides", [{"AUDIT_CHECKPOINT_EVERY": 3}])
def test_appends_sign_a_checkpoint_every_n_events(app, some_history):
    pins = [c["event_id"] for c in checkpoint_rows()]
    assert pins and all(b - a >= 3 for a, b in zip(pins, pins[1:]))
    assert pins[-1] > len(some_history) - 3
    result = verify_cli(app)
    assert result.exit_code == 0 and f"{len(pins)} signed checkpoints match" in result.output


@pytest.mark.parametrize("change", [
    update(CHECKPOINTS).values(event_hash="0" * 64), delete(CHECKPOINTS)], ids=["update", "delete"])
def test_the_database_refuses_to_change_checkpoints(app, some_history, change):
    checkpoint_cli(app)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        on_audit_db(change)
    assert len(checkpoint_rows()) == 1


# --- Many callers at once ------------------------------------------------------------------------

def _held_log(monkeypatch):
    """The log kept busy by its first writer until `release` is set."""
    inside, release, turns = threading.Event(), threading.Event(), []
    write = audit._write

    def slow_first_turn(engine, entries):
        turns.append(entries)
        if len(turns) == 1:
            inside.set()
            release.wait(10)
        return write(engine, entries)
    monkeypatch.setattr(audit, "_write", slow_first_turn)
    return inside, release, turns


def _append_from_threads(app, monkeypatch, patient_ids: dict) -> tuple[dict, list]:
    """`first` writes while the others arrive; returns each caller's outcome and the turns."""
    inside, release, turns = _held_log(monkeypatch)
    outcomes = {}

    def caller(name):
        with app.app_context():
            try:
                audit.append([audit.AuditEntry(action="test.read", username=name,
                                               patient_id=patient_ids[name])])
                outcomes[name] = "recorded"
            except audit.AuditUnavailable:
                outcomes[name] = "refused"
    threads = [threading.Thread(target=caller, args=("first",))]
    threads[0].start()
    assert inside.wait(10)
    threads += [threading.Thread(target=caller, args=(name,)) for name in patient_ids
                if name != "first"]
    for thread in threads[1:]:
        thread.start()
    queue = audit._queue_for(db.engines["audit"])
    deadline = time.monotonic() + 10
    while len(queue.waiting) < len(threads) - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    return outcomes, turns


def recorded_readers() -> list[str]:
    return sorted(row["username"] for row in audit_rows() if row["action"] == "test.read")


def test_callers_arriving_while_the_log_is_busy_are_recorded_together_each_once(app, monkeypatch):
    callers = {"first": "p0", **{f"nurse {i}": f"p{i}" for i in range(1, 7)}}
    outcomes, turns = _append_from_threads(app, monkeypatch, callers)
    assert outcomes == {name: "recorded" for name in callers}
    assert recorded_readers() == sorted(callers)
    assert len(turns) == 2  # the first caller's turn, then one for the six that waited
    assert audit.verify().ok


def test_one_callers_bad_entry_is_refused_without_refusing_those_written_with_it(app, monkeypatch):
    callers = {"first": "p0", **{f"nurse {i}": f"p{i}" for i in range(1, 5)},
               "broken": {"not": "an id"}}
    outcomes, _ = _append_from_threads(app, monkeypatch, callers)
    assert outcomes == {**{name: "recorded" for name in callers}, "broken": "refused"}
    assert recorded_readers() == sorted(name for name in callers if name != "broken")
    assert audit.verify().ok


def test_app_servers_appending_at_once_keep_one_unbroken_chain(app):
    """Each app server process has its own queue (one engine each here), so their appends meet
    only in the database: each must see the row the one before it wrote."""
    servers = [sa.create_engine(db.engines["audit"].url, poolclass=sa.pool.NullPool)
               for _ in range(4)]
    for engine in servers:
        configure_engine(engine, always_immediate=True)  # as create_app does
    failures = []

    def server(engine, name):
        with app.app_context():
            for i in range(25):
                try:
                    audit._write(engine, [audit.AuditEntry(action="test.read", username=name,
                                                           detail={"i": i})])
                except Exception as exc:  # noqa: BLE001
                    failures.append(exc)
    threads = [threading.Thread(target=server, args=(engine, f"server {n}"))
               for n, engine in enumerate(servers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in servers:
        engine.dispose()
    assert failures == []
    rows = audit_rows()
    assert sum(row["action"] == "test.read" for row in rows) == 100
    assert audit.verify().ok


def test_the_log_goes_on_past_two_billion_events(app):
    """A fleet reaches a 32-bit id's end in years: the ids are 64-bit (migration 0009)."""
    last_32_bit = 2**31 - 1
    on_audit_db(insert(EVENTS).values(
        id=last_32_bit, at=datetime.now(timezone.utc), action="test.read", outcome="success",
        detail={}, prev_hash=audit.GENESIS_HASH, hash="ab" * 32))
    audit.append([audit.AuditEntry(action="test.read", username=name)
                  for name in ("past", "further")])
    signed = audit.checkpoint()

    rows = [row for row in audit_rows() if row["id"] > last_32_bit]
    assert [(row["id"], row["username"]) for row in rows] == [
        (2**31, "past"), (2**31 + 1, "further")]
    assert rows[0]["prev_hash"] == "ab" * 32 and rows[1]["prev_hash"] == rows[0]["hash"]
    assert signed["event_id"] == 2**31 + 1
    assert checkpoint_rows()[-1]["event_id"] == 2**31 + 1
