"""Sealed fields: national ids, diagnoses and notes never reach the disk (or a dump, or the
audit log) in plaintext, yet the chart, search and sync work as before; a sealed value moved
or edited fails loudly; keys rotate without anyone losing a record."""
from __future__ import annotations

import base64
import sqlite3
import subprocess  # nosec B404: the test runs pg_dump, a fixed binary with fixed arguments
from contextlib import closing
from pathlib import Path

import flask_migrate
import pytest
import sqlalchemy as sa
from sqlalchemy import select, update

from app.config import ConfigError, build_config
from app.crypto.field_cipher import SealedValueError
from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import Condition, MutationResult, Note, Patient, PatientIdentifier
from app.services import tokens
from app.services.results import Mutation
from sync_api.client import SyncClient
from tests.services.test_audit import audit_rows
from tests.sync import builders
from tests.sync.conftest import FlaskTransport, device, token_for, transport_for  # noqa: F401

PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"
NATIONAL_ID = "CNRYNID48213"
SYNC_NATIONAL_ID = "CNRYNID77391"
CANARIES = (NATIONAL_ID, SYNC_NATIONAL_ID, "CnryHivText", "CnryMoodNote", "CnryAmendment",
            "CnryConflictText", "CnrySyncHiv", "CnrySyncNote")


def _key(seed: int) -> str:
    return base64.b64encode(bytes([seed]) * 32).decode()


PRODUCTION_KEYS = {"FIELD_ENCRYPTION_KEYS": f"k1:{_key(1)}", "FIELD_BLIND_INDEX_KEY": _key(2),
                   "AUDIT_SIGNING_KEY": _key(3), "OUTBOX_ESCROW_KEY": _key(4)}


def register_by_form(client, national_id: str) -> str:
    answer = client.post("/patients/new", data={
        "given_name": "Akosua", "family_name": "Mensah", "sex": "female",
        "birth_date": "1984-03-09", "identifier_system": "national-id",
        "identifier_value": national_id, "confirm_new": "yes"})
    assert answer.status_code == 303, answer.text
    return answer.headers["Location"].rsplit("/", 1)[-1]


@pytest.fixture
def sensitive_chart(world, client_for, write, device):
    """A patient with every sensitive category, written by forms, by apply() and by a device
    push; the clinician's device then pulls it all back. Returns the two patients' ids."""
    clerk = client_for(world.user(r.REGISTRATION_CLERK))
    clinician = client_for(world.user(r.CLINICIAN))
    pid = register_by_form(clerk, NATIONAL_ID)
    # The same id again is refused; the refusal is stored and must not repeat the id.
    again = clerk.post("/patients/new", data={
        "given_name": "Other", "family_name": "Person", "sex": "male", "birth_date": "1990-01-01",
        "identifier_system": "national-id", "identifier_value": NATIONAL_ID, "confirm_new": "yes"})
    assert again.status_code == 422
    assert clinician.post(f"/patients/{pid}/conditions", data={
        "text": "HIV disease CnryHivText", "code": "B20"}).status_code == 303
    assert clinician.post(f"/patients/{pid}/notes", data={
        "text": "Low mood, CnryMoodNote", "sign": "yes"}).status_code == 303
    note_id = db.session.execute(select(Note.id)).scalar_one()
    db.session.rollback()
    actor = world.actor(r.CLINICIAN)
    assert write(actor, "note.amend", "note_addendum",
                 {"note_id": note_id, "text": "CnryAmendment"}).status == "applied"
    # Two drafts edited from the same base: the second waits on the review list.
    draft = write(actor, "note.write", "note", {"patient_id": pid, "text": "draft"}).entity_id
    write(actor, "note.edit", "note", {"text": "draft, checked"}, entity_id=draft,
          base={"text": "draft"}, base_version=1)
    clash = write(actor, "note.edit", "note", {"text": "CnryConflictText"}, entity_id=draft,
                  base={"text": "draft"}, base_version=1)
    assert clash.status == "conflict"

    tablet = device(r.CLINICIAN)
    synced = builders.register(tablet, world.clinics["A"].id,
                               identifiers=[{"system": "national-id", "value": SYNC_NATIONAL_ID}])
    tablet.queue("condition.add", "condition", new_id(),
                 {"patient_id": synced, "text": "CnrySyncHiv", "code": "Z21"})
    tablet.queue("note.write", "note", new_id(), {"patient_id": synced, "text": "CnrySyncNote"})
    tablet.sync()
    held = " ".join(str(record) for record in tablet.store.rows.values())
    assert all(canary in held for canary in CANARIES if canary != "CnryConflictText"), \
        "the clinician's device gets every sensitive record in the clear"

    found = clinician.get(f"/patients?q={NATIONAL_ID.lower()}", headers={"HX-Request": "true"})
    assert "Mensah, Akosua" in found.text and "Person, Other" not in found.text
    chart = clinician.get(f"/patients/{pid}").text
    for shown in (NATIONAL_ID, "CnryHivText", "CnryMoodNote", "CnryAmendment"):
        assert shown in chart, shown
    assert "CnryConflictText" in clinician.get("/conflicts").text
    return pid, synced


def _leaks(blob: bytes) -> list[str]:
    # Case-blind: search lowercases what was typed, and the audit log keeps searches.
    blob = blob.lower()
    return [canary for canary in CANARIES if canary.lower().encode() in blob]


def _sqlite_files(app) -> list[Path]:
    files = []
    for url in (app.config["SQLALCHEMY_DATABASE_URI"], *app.config["SQLALCHEMY_BINDS"].values()):
        path = Path(sa.engine.make_url(url).database)
        files += [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
    return files


@pytest.mark.postgres
def test_no_canary_reaches_the_database_files_or_a_dump(app, sensitive_chart):
    db.session.remove()
    if db.engine.dialect.name == "sqlite":
        before = {str(p): _leaks(p.read_bytes()) for p in _sqlite_files(app)}
        assert {p: found for p, found in before.items() if found} == {}
        for engine in (db.engine, db.engines["audit"]):
            engine.dispose()
            with closing(sqlite3.connect(engine.url.database)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL's pages into the file
        after = {str(p): _leaks(p.read_bytes()) for p in _sqlite_files(app)}
        assert len(after) >= 2 and {p: found for p, found in after.items() if found} == {}
        return
    for url in (app.config["SQLALCHEMY_DATABASE_URI"], *app.config["SQLALCHEMY_BINDS"].values()):
        libpq = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        dump = subprocess.run([PG_DUMP, "--no-owner", libpq], capture_output=True,  # nosec B603
                              check=True, timeout=60).stdout
        assert b"CREATE TABLE" in dump
        assert _leaks(dump) == [], url


def test_a_sealed_value_moved_to_another_row_or_edited_fails_loudly(app, sensitive_chart):
    first, second = db.session.execute(select(Note.id, Note.text_stored)
                                       .order_by(Note.created_at)).all()[:2]
    db.session.execute(update(Note).where(Note.id == second.id)
                       .values(text_stored=first.text_stored))
    db.session.commit()
    with pytest.raises(SealedValueError, match=f"note.text of row {second.id}.*copied"):
        db.session.get(Note, second.id).text
    db.session.rollback()

    condition = db.session.execute(select(Condition)).scalars().first()
    stored = condition.text_stored
    flipped = stored[:-3] + ("A" if stored[-3] != "A" else "B") + stored[-2:]
    db.session.execute(update(Condition).where(Condition.id == condition.id)
                       .values(text_stored=flipped))
    db.session.commit()
    with pytest.raises(SealedValueError, match="altered"):
        db.session.get(Condition, condition.id).text
    db.session.rollback()

    # Plaintext written over a sealed value is refused too, not shown as if it were genuine.
    identifier = db.session.execute(select(PatientIdentifier)).scalars().first()
    db.session.execute(update(PatientIdentifier).where(PatientIdentifier.id == identifier.id)
                       .values(value_stored="FORGED-ID"))
    db.session.commit()
    with pytest.raises(SealedValueError, match="no sealed value"):
        db.session.get(PatientIdentifier, identifier.id).value


def test_other_identifiers_stay_searchable_by_prefix(world, register, client_for):
    register(world.actor(r.REGISTRATION_CLERK), family_name="Kariuki",
             identifiers=[{"system": "mrn", "value": "MRN-5521"}])
    stored = db.session.execute(select(PatientIdentifier.value_stored)).scalar_one()
    assert stored == "MRN-5521"  # only national ids are sealed
    page = client_for(world.user(r.NURSE)).get("/patients?q=mrn-55")
    assert "Kariuki" in page.text


def keys_cli(app, *args):
    return app.test_cli_runner().invoke(args=["keys", *args])


def test_rotation_moves_everything_to_the_new_key_and_the_old_one_can_go(
        app, world, sensitive_chart, client_for):
    pid, synced = sensitive_chart
    old = app.config["FIELD_ENCRYPTION_KEYS"]  # the development key, id "dev"
    app.config["FIELD_ENCRYPTION_KEYS"] = f"new:{_key(9)},{old}"
    before = keys_cli(app, "status")
    assert "dev:" in before.output and "new:" not in before.output, before.output

    rotated = keys_cli(app, "rotate", "--batch-size", "3")
    assert rotated.exit_code == 0, rotated.output
    assert "entity_history:" in rotated.output  # progress per table
    assert "re-sealed under key new" in rotated.output
    again = keys_cli(app, "rotate")
    assert "Done: 0 rows re-sealed" in again.output  # nothing left: safe to rerun

    app.config["FIELD_ENCRYPTION_KEYS"] = f"new:{_key(9)}"
    after = keys_cli(app, "status")
    assert "dev:" not in after.output and "(plaintext)" not in after.output, after.output
    assert "note: 3 rows; sealed values by key: new: 3" in after.output

    db.session.remove()
    clinician = client_for(world.user(r.CLINICIAN))
    chart = clinician.get(f"/patients/{pid}").text
    assert NATIONAL_ID in chart and "CnryHivText" in chart and "CnryAmendment" in chart
    assert "CnryConflictText" in clinician.get("/conflicts").text
    assert "Mensah" in clinician.get(f"/patients?q={NATIONAL_ID}").text
    # The history page opens the patient's history copies, identifiers included.
    assert clinician.get(f"/patients/{pid}/history").status_code == 200
    secret = tokens.issue(world.user(r.CLINICIAN), "new tablet", world.clinics["A"].id)
    db.session.commit()
    fresh = SyncClient(FlaskTransport(app.test_client(), {"Authorization": f"Bearer {secret}"}))
    fresh.pull()
    assert SYNC_NATIONAL_ID in str(fresh.store.rows) and "CnrySyncNote" in str(fresh.store.rows)


def test_without_the_old_key_unrotated_values_fail_instead_of_vanishing(app, sensitive_chart):
    app.config["FIELD_ENCRYPTION_KEYS"] = f"new:{_key(9)}"
    db.session.expire_all()
    with pytest.raises(SealedValueError, match="key 'dev', which is not configured"):
        db.session.execute(select(Note)).scalars().first().text
    db.session.rollback()
    status = keys_cli(app, "rotate")
    assert status.exit_code == 1 and "could not be opened" in status.output


def test_the_search_audit_names_a_found_national_id_without_holding_it(
        app, world, register, client_for):
    register(world.actor(r.REGISTRATION_CLERK),
             identifiers=[{"system": "national-id", "value": NATIONAL_ID}])
    client_for(world.user(r.NURSE)).get(f"/patients?q={NATIONAL_ID}")
    [search] = [e for e in audit_rows() if e["action"] == "patient.search"]
    assert search["patient_id"] is not None
    assert search["detail"]["q"].startswith("[id ") and NATIONAL_ID not in str(search)


def test_a_mistyped_national_id_that_finds_no_one_is_not_kept_in_the_audit_log(
        app, world, client_for):
    client_for(world.user(r.NURSE)).get("/patients?q=Amina+" + NATIONAL_ID[::-1])
    [search] = [e for e in audit_rows() if e["action"] == "patient.search"]
    assert search["detail"]["q"].startswith("Amina [id ")
    assert NATIONAL_ID[::-1] not in str(search)


@pytest.mark.parametrize("missing", sorted(PRODUCTION_KEYS))
def test_production_refuses_to_start_without_its_keys(monkeypatch, tmp_path, missing):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "s" * 40)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/c.db")
    monkeypatch.setenv("AUDIT_DATABASE_URL", f"sqlite:///{tmp_path}/a.db")
    for name, value in PRODUCTION_KEYS.items():
        monkeypatch.setenv(name, value)
    assert build_config(str(tmp_path))["FIELD_ENCRYPTION_KEYS"].startswith("k1:")
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError, match=missing):
        build_config(str(tmp_path))
    monkeypatch.setenv(missing, "not-a-key")
    with pytest.raises(ConfigError):
        build_config(str(tmp_path))


def test_a_stored_payload_hash_cannot_confirm_a_guessed_national_id(world, write):
    clerk = world.actor(r.REGISTRATION_CLERK)
    data = {"given_name": "Yaw", "family_name": "Boateng", "sex": "male",
            "birth_date": "1979-02-11", "clinic_id": clerk.clinic_id,
            "identifiers": [{"system": "national-id", "value": NATIONAL_ID}]}
    mid, pid = new_id(), new_id()
    assert write(clerk, "patient.register", "patient", data, entity_id=pid, mid=mid).ok
    # Everything else in the payload is on the patient row in the clear: an unkeyed hash
    # would confirm a guessed id.
    guess = Mutation(mid=mid, type="patient.register", entity="patient", entity_id=pid, data=data)
    assert db.session.get(MutationResult, mid).payload_hash != guess.payload_hash()
    again = write(clerk, "patient.register", "patient", data, entity_id=pid, mid=mid)
    assert again.status == "duplicate"


def test_the_migration_seals_existing_plaintext_and_its_downgrade_opens_it(
        app, world, register, write):
    clerk, clinician = world.actor(r.REGISTRATION_CLERK), world.actor(r.CLINICIAN)
    pid = register(clerk, identifiers=[{"system": "national-id", "value": NATIONAL_ID}])
    write(clinician, "note.write", "note", {"patient_id": pid, "text": "CnryMoodNote"})
    db.session.remove()
    raw = sa.text("SELECT (SELECT value FROM patient_identifier) || ' ' || (SELECT text FROM note)"
                  " || ' ' || (SELECT group_concat(record, ' ') FROM entity_history)")

    flask_migrate.downgrade(revision="0004")
    with db.engine.connect() as conn:
        before = conn.execute(raw).scalar_one()
    assert NATIONAL_ID in before and "CnryMoodNote" in before and "enc:v1:" not in before

    flask_migrate.upgrade()
    with db.engine.connect() as conn:
        after = conn.execute(raw).scalar_one()
    assert _leaks(after.encode()) == [] and after.count("enc:v1:dev:") >= 3
    assert db.session.get(Patient, pid).to_record()["identifiers"][0]["value"] == NATIONAL_ID
