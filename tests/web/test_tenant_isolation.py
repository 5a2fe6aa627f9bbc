"""Clinic A's people never see or change clinic B's patients, through any route.

Clinic B gets a patient whose every field holds a unique canary string, with a visit,
readings, diagnosis, notes, an order and its dispense, an appointment, a consent and an
open conflict, and a device that syncs there. Every user of clinic A (every role) then
requests every GET route of the app with clinic B's ids, searches for the canaries, and
posts to every write route with clinic B's ids. No canary may appear in any answer, and
clinic B's rows must be exactly as they were.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import or_, select

from app.demo.signature import signature_data_url
from app.domain import roles as r
from app.domain.stations import ACTIVE_STATIONS
from app.extensions import db
from app.models import (Appointment, ChangeLog, Clinic, Condition, Conflict, Consent,
                        MedicationDispense, MedicationRequest, Membership, Note, NoteAddendum,
                        Observation, Patient, PatientIdentifier, SyncClient, Team, User,
                        UserSession, Visit)
from app.models.types import utcnow
from app.services import break_glass

pytestmark = pytest.mark.postgres

PHONE = "+254 799 731 846"
CANARIES = {
    "given_name": "CanaryGivenB7x", "family_name": "CanaryFamilyB7x",
    "address": "CanaryAddressB7x Lane", "identifier": "CANARYIDB7X",
    "visit_reason": "CanaryReasonB7x", "observation_code": "CANARYB7X",
    "observation_value": "CanaryObsB7x", "diagnosis": "CanaryDiagnosisB7x",
    "diagnosis_code": "CANCODEB7X", "note": "CanaryNoteB7x", "draft_note": "CanaryDraftB7x",
    "addendum": "CanaryAddendumB7x", "medication": "CanaryMedB7x 500 mg",
    "dose": "CanaryDoseB7x", "frequency": "CanaryFreqB7x", "appointment": "CanaryApptB7x",
    "signer": "CanarySignerB7x", "address_now": "CanaryAddressTwoB7x",
    "conflicting_address": "CanaryConflictB7x",
    "device": "CanaryDeviceB7x", "app_version": "CanaryAppB7x",
    "worker_version": "CanaryWorkerB7x",
}
PHONE_FORMS = (PHONE, "799 731 846", "799731846")
# Patient-data ids in a URL: a clinic A user must get 404 (clinical roles) or 403 (others).
RECORD_PARAMS = {"patient_id", "visit_id", "condition_id", "note_id", "request_id",
                 "appointment_id", "identifier_id", "conflict_id"}
# An organization administrator reviews the whole organization's audit log and devices by
# design (app/web/admin.py audit_get and devices_get: only other roles are limited to their
# clinic), so clinic B's search terms in that log and its devices are not a leak for them.
ORG_WIDE = {(r.ORG_ADMIN, "admin.audit_get"), (r.ORG_ADMIN, "admin.devices_get")}
# Privacy officers review every emergency access of the organization (docs/decisions.md
# "Break-glass"), so clinic B's grant, canary patient included, is theirs to see.
ORG_WIDE |= {(r.PRIVACY_OFFICER, "break_glass.admin_break_glass_get"),
             (r.PRIVACY_OFFICER, "break_glass.admin_break_glass_grant_get")}


@pytest.fixture
def app_overrides():
    # A crash is reported as a 500 for that URL. The sync event stream is read to its end,
    # which by default is most of a minute away.
    return {"PROPAGATE_EXCEPTIONS": False, "SYNC_EVENTS_MAX_SECONDS": 0.2}


def applied(result):
    assert result.status in ("applied", "conflict"), result.error
    return result


@pytest.fixture
def clinic_b(world, write, register, client_for) -> dict:
    """Clinic B's canary patient and everything recorded about them; returns their ids."""
    clerk, nurse = world.actor(r.REGISTRATION_CLERK, "B"), world.actor(r.NURSE, "B")
    clinician, pharmacist = world.actor(r.CLINICIAN, "B"), world.actor(r.PHARMACIST, "B")
    c = CANARIES
    pid = register(clerk, given_name=c["given_name"], family_name=c["family_name"], phone=PHONE,
                   address=c["address"],
                   identifiers=[{"system": "national-id", "value": c["identifier"]}])
    visit = applied(write(clerk, "visit.start", "visit", {
        "patient_id": pid, "clinic_id": clerk.clinic_id, "station": "triage",
        "reason": c["visit_reason"]}))
    applied(write(nurse, "observation.record", "observation", {
        "patient_id": pid, "code": c["observation_code"], "value": c["observation_value"],
        "unit": "u", "effective_at": "2026-01-01T10:00:00Z", "visit_id": visit.entity_id}))
    applied(write(nurse, "observation.record", "observation", {
        "patient_id": pid, "code": "8867-4", "value": 123, "unit": "/min",
        "effective_at": "2026-01-01T10:00:00Z", "visit_id": visit.entity_id}))
    condition = applied(write(clinician, "condition.add", "condition", {
        "patient_id": pid, "text": c["diagnosis"], "code": c["diagnosis_code"],
        "visit_id": visit.entity_id}))
    note = applied(write(clinician, "note.write", "note", {"patient_id": pid, "text": c["note"]}))
    applied(write(clinician, "note.sign", "note", {}, entity_id=note.entity_id, base_version=1))
    applied(write(clinician, "note.amend", "note_addendum",
                  {"note_id": note.entity_id, "text": c["addendum"]}))
    draft = applied(write(clinician, "note.write", "note",
                          {"patient_id": pid, "text": c["draft_note"]}))
    order = applied(write(clinician, "medication.order", "medication_request", {
        "patient_id": pid, "medication": c["medication"], "dose": c["dose"], "route": "oral",
        "frequency": c["frequency"], "quantity": 10}))
    applied(write(pharmacist, "medication.dispense", "medication_dispense",
                  {"request_id": order.entity_id, "quantity": 2}))
    appointment = applied(write(clerk, "appointment.book", "appointment", {
        "patient_id": pid, "starts_at": "2099-03-03T10:00:00Z", "reason": c["appointment"]}))
    applied(write(clerk, "consent.record", "consent", {
        "patient_id": pid, "scope": "treatment", "signer_name": c["signer"],
        "signer_relation": "guardian", "signature_png": signature_data_url()}))
    base = {"address": c["address"]}
    applied(write(nurse, "patient.update", "patient", {"address": c["address_now"]},
                  entity_id=pid, base=base, base_version=1))
    conflicting = write(clerk, "patient.update", "patient", {"address": c["conflicting_address"]},
                        entity_id=pid, base=base, base_version=1)
    assert conflicting.status == "conflict"
    team = Team(id="0190f5a0-0000-7000-8000-00000000b7b7", clinic_id=world.clinics["B"].id,
                name="Team B")
    db.session.add(team)
    # A device of clinic B, at risk so that its reasons are on the page too.
    db.session.add(SyncClient(
        client_id=f"{c['device']}-0001", user_id=world.user(r.NURSE, "B").id,
        clinic_id=world.clinics["B"].id, last_seq=0, generation=0, last_seen_at=utcnow(),
        telemetry={"queue_depth": 7, "oldest_pending_at": "2026-01-01T10:00:00Z",
                   "quarantine_count": 2, "storage_used": 95, "storage_quota": 100,
                   "storage_persisted": False, "app_version": c["app_version"],
                   "worker_version": c["worker_version"]},
        telemetry_at=utcnow()))
    db.session.commit()

    # Clinic B's own staff at work, so the audit log holds their searches and reads too.
    staff_b = client_for(world.user(r.REGISTRATION_CLERK, "B"))
    assert staff_b.get(f"/patients?q={c['family_name']}").status_code == 200
    assert c["address_now"] in staff_b.get(f"/patients/{pid}").get_data(as_text=True)

    # An emergency access to the canary patient, waiting for the privacy officer's review.
    grant = break_glass.open_grant(world.user(r.CLINICIAN, "B"), world.clinics["B"].id,
                                   db.session.get(Patient, pid), "canary emergency reason",
                                   utcnow(), break_glass.Limits(60, 72))
    db.session.commit()
    nurse_b = world.user(r.NURSE, "B")
    return {
        "patient_id": pid,
        "visit_id": visit.entity_id,
        "condition_id": condition.entity_id,
        "note_id": note.entity_id,
        "draft_note_id": draft.entity_id,
        "request_id": order.entity_id,
        "appointment_id": appointment.entity_id,
        "identifier_id": db.session.execute(select(PatientIdentifier.id).where(
            PatientIdentifier.patient_id == pid)).scalar_one(),
        "conflict_id": db.session.execute(select(Conflict.id).where(
            Conflict.patient_id == pid)).scalar_one(),
        "user_id": nurse_b.id,
        "membership_id": db.session.execute(select(Membership.id).where(
            Membership.user_id == nurse_b.id)).scalar_one(),
        "clinic_id": world.clinics["B"].id,
        "team_id": team.id,
        "grant_id": grant.id,
    }


def snapshot(b: dict) -> dict:
    """Every row of clinic B's patient and people, read fresh from the database."""
    pid, clinic_id = b["patient_id"], b["clinic_id"]
    b_users = select(Membership.user_id).where(Membership.clinic_id == clinic_id)
    queries = {
        "patient": select(Patient.__table__).where(Patient.id == pid),
        "change_log": select(ChangeLog.__table__).where(ChangeLog.patient_id == pid),
        "conflict": select(Conflict.__table__).where(Conflict.patient_id == pid),
        "clinic": select(Clinic.__table__).where(Clinic.id == clinic_id),
        "team": select(Team.__table__).where(Team.clinic_id == clinic_id),
        "membership": select(Membership.__table__).where(or_(
            Membership.clinic_id == clinic_id, Membership.user_id.in_(b_users))),
        "user": select(User.__table__).where(User.id.in_(b_users)),
        "sync_client": select(SyncClient.__table__).where(SyncClient.clinic_id == clinic_id)
        .order_by(SyncClient.client_id),
    }
    for model in (PatientIdentifier, Visit, Observation, Condition, Note, NoteAddendum,
                  MedicationRequest, MedicationDispense, Appointment, Consent):
        queries[model.__tablename__] = select(model.__table__).where(model.patient_id == pid)
    db.session.rollback()  # nothing pending; start a fresh read
    rows = {name: sorted((dict(row) for row in db.session.execute(query).mappings()),
                         key=lambda row: str(row.get("id") or row.get("seq")))
            for name, query in queries.items()}
    db.session.rollback()  # and end it: on SQLite an open transaction holds the write lock
    return rows


def leaked(body: str, echoed: list[str]) -> list[str]:
    """The canaries in a page, ignoring what the request itself typed in (a search box)."""
    for value in echoed:
        if value:
            body = body.replace(value, "")
    lowered = body.lower()
    found = [name for name, canary in CANARIES.items() if canary.lower() in lowered]
    return found + [form for form in PHONE_FORMS if form in body]


def url_for_rule(app, rule, method: str, ids: dict) -> list[str]:
    unknown = sorted(a for a in rule.arguments if a not in ids and a != "station")
    assert not unknown, f"{rule.rule}: no clinic B record for URL parameter(s) {unknown}"
    adapter = app.url_map.bind("localhost")
    stations = ACTIVE_STATIONS if "station" in rule.arguments else (None,)
    return [adapter.build(rule.endpoint, {**{a: ids[a] for a in rule.arguments if a in ids},
                                          **({"station": s} if s else {})}, method=method)
            for s in stations]


def rules_with(app, method: str) -> list:
    return sorted((rule for rule in app.url_map.iter_rules()
                   if rule.endpoint != "static" and method in rule.methods),
                  key=lambda rule: rule.rule)


def test_clinic_a_sees_nothing_of_clinic_b(app, world, clinic_b, client_for):
    before = snapshot(clinic_b)
    ids = {**clinic_b}
    b_clerk = world.user(r.REGISTRATION_CLERK, "B").username
    extra_reads = [
        ("admin.audit_get", f"/admin/audit?patient={clinic_b['patient_id']}"),
        ("admin.audit_get", f"/admin/audit?user={b_clerk}"),
        ("admin.audit_get", "/admin/audit?action=patient"),
        ("worklist.worklist_get", "/worklist/triage?since=x"),
        ("admin.devices_get", f"/admin/devices?clinic_id={clinic_b['clinic_id']}"),
    ]
    searches = [CANARIES["given_name"], CANARIES["family_name"], CANARIES["identifier"],
                "799731846", "canary"]
    problems = []

    clients = {role: client_for(world.user(role, "A")) for role in r.ROLES}
    for role, client in clients.items():
        reads = [(rule.endpoint, url, rule.arguments)
                 for rule in rules_with(app, "GET") for url in url_for_rule(app, rule, "GET", ids)]
        reads += [(endpoint, url, set()) for endpoint, url in extra_reads]
        for endpoint, url, arguments in reads:
            response = client.get(url)
            body = response.get_data(as_text=True)
            echoed = [value for _, value in parse_qsl(urlsplit(url).query)]
            if (role, endpoint) not in ORG_WIDE and (found := leaked(body, echoed)):
                problems.append(f"{role} GET {url} ({response.status_code}) shows {found}")
            if arguments & RECORD_PARAMS and response.status_code not in (403, 404):
                problems.append(f"{role} GET {url}: {response.status_code}, not 403/404")
            if response.status_code >= 500:
                problems.append(f"{role} GET {url}: {response.status_code}")
    # Searching last: what clinic A's people type lands in clinic A's own audit log.
    for role, client in clients.items():
        for q in searches:
            response = client.get("/patients", query_string={"q": q})
            body = response.get_data(as_text=True)
            if found := leaked(body, [q]):
                problems.append(f"{role} searching {q!r} is shown {found}")
            if clinic_b["patient_id"] in body:
                problems.append(f"{role} searching {q!r} gets a link to clinic B's patient")

    assert not problems, "\n".join(problems)
    assert snapshot(clinic_b) == before


def write_forms(b: dict) -> dict[str, dict]:
    """Valid form data aimed at clinic B's records: it would be written if the route let it."""
    return {
        "auth.session_clinic_post": {"clinic_id": b["clinic_id"]},
        "patients.patient_edit_post": {
            "given_name": "Overwritten", "base_given_name": CANARIES["given_name"],
            "address": "Overwritten", "base_address": CANARIES["address_now"], "base_version": "2"},
        "patients.patient_identifiers_post": {"system": "mrn", "value": "FROM-CLINIC-A"},
        "patients.patient_identifier_retire_post": {"reason": "taken over"},
        "clinical.patient_visits_post": {"station": "triage", "reason": "from clinic A"},
        "clinical.visit_move_post": {"station": "done", "base_version": "1"},
        "clinical.patient_vitals_post": {"heart_rate": "60", "temperature": "37"},
        "clinical.patient_conditions_post": {"text": "From clinic A"},
        "clinical.condition_resolve_post": {"base_version": "1"},
        "clinical.patient_notes_post": {"text": "From clinic A", "sign": "yes"},
        "clinical.note_edit_post": {"text": "Overwritten", "base_text": CANARIES["note"],
                                    "base_version": "1"},
        "clinical.note_sign_post": {"base_version": "1"},
        "clinical.note_amend_post": {"text": "From clinic A"},
        "clinical.patient_medications_post": {"medication": "Overdose", "dose": "10",
                                              "route": "oral", "frequency": "hourly",
                                              "quantity": "100"},
        "clinical.medication_dispense_post": {"quantity": "8"},
        "clinical.patient_appointments_post": {"starts_at": "2099-04-04T09:00",
                                               "tz_offset": "+00:00"},
        "clinical.appointment_cancel_post": {"reason": "from clinic A", "base_version": "1"},
        "clinical.patient_consents_post": {"scope": "research", "signer_name": "Clinic A",
                                           "signer_relation": "self",
                                           "signature_png": signature_data_url()},
        "conflicts.conflict_resolve_post": {"choice": "incoming"},
        "admin.users_post": {"username": "planted.in.b", "display_name": "Planted",
                             "clinic_id": b["clinic_id"], "role": r.CLINICIAN},
        "admin.user_memberships_post": {"clinic_id": b["clinic_id"], "role": r.CLINIC_ADMIN},
        "admin.clinic_teams_post": {"name": "Planted team"},
    }


# Signing in and out act on the poster's own account, not on clinic B's records.
NOT_ABOUT_RECORDS = {"auth.login_post", "auth.login_code_post", "auth.login_setup_post",
                     "auth.logout_post"}
WRITERS = (r.REGISTRATION_CLERK, r.CLINICIAN, r.PHARMACIST, r.CLINIC_ADMIN)


def test_clinic_a_cannot_change_clinic_b(app, world, clinic_b, client_for):
    before = snapshot(clinic_b)
    forms = write_forms(clinic_b)
    # The note routes are tried on both of clinic B's notes: the signed one and the draft.
    id_sets = [clinic_b, {**clinic_b, "note_id": clinic_b["draft_note_id"]}]
    problems = []
    for role in WRITERS:
        client = client_for(world.user(role, "A"))
        for rule in rules_with(app, "POST"):
            if rule.endpoint in NOT_ABOUT_RECORDS:
                continue
            for ids in id_sets if "note_id" in rule.arguments else id_sets[:1]:
                for url in url_for_rule(app, rule, "POST", ids):
                    response = client.post(url, data={
                        "mid": "0190f5a0-0000-7000-8000-0000000000a1"
                        if rule.endpoint == "conflicts.conflict_resolve_post" else "",
                        **forms.get(rule.endpoint, {})})
                    if response.status_code >= 500:
                        problems.append(f"{role} POST {url}: {response.status_code}")
                    if rule.arguments & RECORD_PARAMS and response.status_code not in (403, 404):
                        problems.append(f"{role} POST {url}: {response.status_code}, not 403/404")
        # Asking to switch to clinic B is refused: the session stays at clinic A.
        db.session.rollback()
        at = set(db.session.execute(select(UserSession.clinic_id).where(
            UserSession.user_id == world.user(role, "A").id)).scalars())
        db.session.rollback()
        if at != {world.clinics["A"].id}:
            problems.append(f"{role}'s session moved to clinic(s) {at}")
    # A registration at clinic A with clinic B's patient's details finds no "duplicate" there.
    clerk = client_for(world.user(r.REGISTRATION_CLERK, "A"))
    response = clerk.post("/patients/new", data={
        "given_name": CANARIES["given_name"], "family_name": CANARIES["family_name"],
        "sex": "female", "birth_date": "1990-05-17", "phone": PHONE})
    after = snapshot(clinic_b)
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"clinic B's rows changed: {changed}"
    assert not problems, "\n".join(problems)
    assert response.status_code == 303, "the duplicate check offered clinic B's patient"
    assert clinic_b["patient_id"] not in response.get_data(as_text=True)
