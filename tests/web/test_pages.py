"""The pages a clinic uses, driven through the HTTP interface a browser uses."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.domain import roles as r
from app.extensions import db
from app.models import AuditEvent, Conflict, Observation, Patient, Visit

pytestmark = pytest.mark.postgres


def _mid(html: str) -> str:
    return re.search(r'name="mid" value="([0-9a-f-]{36})"', html).group(1)


def test_registration_checks_for_likely_duplicates_first(world, register, client_for):
    clerk = world.user(r.REGISTRATION_CLERK)
    register(world.actor(r.REGISTRATION_CLERK), given_name="Amina", family_name="Odhiambo",
             birth_date="1991-02-03", phone="0712 345 678")
    client = client_for(clerk)
    form = {"given_name": "Aminah", "family_name": "Odhiambo", "sex": "female",
            "birth_date": "1991-02-03", "mid": _mid(client.get("/patients/new").text)}
    answer = client.post("/patients/new", data=form)
    assert answer.status_code == 409
    assert "may be a patient who is already registered" in answer.text
    assert "Odhiambo, Amina" in answer.text and "same date of birth" in answer.text
    assert db.session.scalar(select(func.count()).select_from(Patient)) == 1

    confirmed = client.post("/patients/new", data={**form, "confirm_new": "yes",
                                                    "mid": _mid(answer.text)})
    assert confirmed.status_code == 303
    assert db.session.scalar(select(func.count()).select_from(Patient)) == 2
    chart = client.get(confirmed.headers["Location"])
    assert "Aminah" in chart.text and "is registered" in chart.text


def test_registration_errors_name_the_field_and_keep_values(world, client_for):
    client = client_for(world.user(r.REGISTRATION_CLERK))
    answer = client.post("/patients/new", data={"given_name": "Baraka", "family_name": "",
                                                "sex": "male", "birth_date": "2999-01-01"})
    assert answer.status_code == 422
    assert "Family name is required." in answer.text
    assert 'value="Baraka"' in answer.text
    assert db.session.scalar(select(func.count()).select_from(Patient)) == 0


def test_double_submitted_form_writes_once(world, client_for):
    client = client_for(world.user(r.REGISTRATION_CLERK))
    form = {"given_name": "Juma", "family_name": "Hassan", "sex": "male", "birth_date": "1980-01-01",
            "mid": _mid(client.get("/patients/new").text)}
    first, second = client.post("/patients/new", data=form), client.post("/patients/new", data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert db.session.scalar(select(func.count()).select_from(Patient)) == 1


def test_search_by_name_identifier_and_phone(world, register, client_for):
    actor = world.actor(r.REGISTRATION_CLERK)
    register(actor, given_name="Wanjiku", family_name="Kariuki", phone="0733 111 222",
             identifiers=[{"system": "national-id", "value": "29384756"}])
    register(actor, given_name="Otieno", family_name="Mugo")
    client = client_for(world.user(r.NURSE))
    # A national id is sealed, so it is found whole (by its blind index), not by a prefix.
    for query in ("wanj", "KARIUKI", "29384756", "0733111"):
        page = client.get(f"/patients?q={query}", headers={"HX-Request": "true"})
        assert "Kariuki, Wanjiku" in page.text and "Mugo" not in page.text, query
        assert "<html" not in page.text  # htmx gets only the results fragment
    assert "No patient in this clinic matches" in client.get("/patients?q=zzz").text


def test_vitals_form_records_and_chart_shows_them(world, register, client_for):
    pid = register(world.actor(r.REGISTRATION_CLERK))
    client = client_for(world.user(r.NURSE))
    page = client.get(f"/patients/{pid}/vitals")
    answer = client.post(f"/patients/{pid}/vitals", data={
        "heart_rate": "88", "temperature": "38.4", "mid": _mid(page.text)})
    assert answer.status_code == 303
    chart = client.get(f"/patients/{pid}").text
    assert re.search(r'data-code="8867-4">.*?88 <span class="unit">/min', chart, re.S)
    assert re.search(r'data-code="8310-5">.*?38.4 <span class="unit">Cel', chart, re.S)
    fresh_form = client.get(f"/patients/{pid}/vitals").text
    bad = client.post(f"/patients/{pid}/vitals", data={"temperature": "73", "heart_rate": "70",
                                                       "mid": _mid(fresh_form)})
    assert bad.status_code == 422 and "outside the range" in bad.text
    for not_a_number in ("nan", "inf"):
        refused = client.post(f"/patients/{pid}/vitals", data={
            "heart_rate": not_a_number, "mid": _mid(client.get(f"/patients/{pid}/vitals").text)})
        assert refused.status_code == 422
    assert db.session.scalar(select(func.count()).select_from(Observation)) == 2


def test_worklist_answers_204_while_unchanged_then_the_new_list(world, register, write, client_for):
    clerk = world.actor(r.REGISTRATION_CLERK)
    pid = register(clerk, given_name="Halima", family_name="Omar")
    client = client_for(world.user(r.NURSE))
    page = client.get("/worklist/triage").text
    fingerprint = re.search(r'data-fingerprint="([0-9a-f]+)"', page).group(1)
    poll = client.get(f"/worklist/triage?since={fingerprint}", headers={"HX-Request": "true"})
    assert poll.status_code == 204 and poll.data == b""
    visit = write(clerk, "visit.start", "visit", {"patient_id": pid, "clinic_id": clerk.clinic_id,
                                                  "station": "triage"})
    assert visit.status == "applied"
    poll = client.get(f"/worklist/triage?since={fingerprint}", headers={"HX-Request": "true"})
    assert poll.status_code == 200 and "Omar, Halima" in poll.text


def test_an_open_chart_refreshed_after_a_change_elsewhere_reads_nothing_new(world, register, write,
                                                                          client_for):
    clerk, nurse = world.actor(r.REGISTRATION_CLERK), world.user(r.NURSE)
    pid = register(clerk, given_name="Zawadi", family_name="Mwangi")
    client = client_for(nurse)
    page = client.get(f"/patients/{pid}").text
    refresh = re.search(rf'hx-get="/patients/{pid}\?since=([0-9a-f]+)"', page).group(1)

    def reads() -> int:
        return db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "patient.read", AuditEvent.patient_id == pid))

    before = reads()
    register(clerk, given_name="Other", family_name="Patient")  # a change elsewhere in the clinic
    again = client.get(f"/patients/{pid}?since={refresh}", headers={"HX-Request": "true"})
    assert again.status_code == 204 and again.data == b""
    assert reads() == before

    visit = write(clerk, "visit.start", "visit", {"patient_id": pid, "clinic_id": clerk.clinic_id,
                                                  "station": "triage"})
    assert visit.status == "applied"
    again = client.get(f"/patients/{pid}?since={refresh}", headers={"HX-Request": "true"})
    assert again.status_code == 200 and "At <strong>Triage</strong>" in again.text
    assert reads() == before + 1


def test_sending_a_visit_on_from_the_worklist(world, register, write, client_for):
    clerk = world.actor(r.REGISTRATION_CLERK)
    pid = register(clerk)
    visit = write(clerk, "visit.start", "visit", {"patient_id": pid, "clinic_id": clerk.clinic_id,
                                                  "station": "triage"})
    client = client_for(world.user(r.NURSE))
    answer = client.post(f"/visits/{visit.entity_id}/move", data={
        "station": "consultation", "base_version": "1", "next": "/worklist/triage",
        "mid": _mid(client.get("/worklist/triage").text)})
    assert answer.status_code == 303 and answer.headers["Location"] == "/worklist/triage"
    assert db.session.get(Visit, visit.entity_id).station == "consultation"


def test_conflict_waits_for_review_and_a_person_decides(world, register, write, client_for):
    clerk = world.actor(r.REGISTRATION_CLERK)
    pid = register(clerk, phone="0700 000 000")
    write(world.actor(r.NURSE), "patient.update", "patient", {"phone": "0722 222 222"},
          entity_id=pid, base={"phone": "0700 000 000"}, base_version=1)
    late = write(clerk, "patient.update", "patient", {"phone": "0711 111 111"}, entity_id=pid,
                 base={"phone": "0700 000 000"}, base_version=1)
    assert late.status == "conflict"
    client = client_for(world.user(r.CLINICIAN))
    page = client.get("/conflicts").text
    assert "0722 222 222" in page and "0711 111 111" in page
    conflict_id = db.session.execute(select(Conflict.id)).scalar_one()
    answer = client.post(f"/conflicts/{conflict_id}/resolve", data={"choice": "incoming",
                                                                    "mid": _mid(page)})
    assert answer.status_code == 303
    db.session.expire_all()
    assert db.session.get(Patient, pid).phone == "0711 111 111"
    assert db.session.get(Conflict, conflict_id).status == "resolved"
    assert "Nothing is waiting for review." in client.get("/conflicts").text


def test_every_clinical_form_page_renders(world, register, write, client_for):
    pid = register(world.actor(r.REGISTRATION_CLERK))
    client = client_for(world.user(r.CLINICIAN))
    for path in ("vitals", "conditions", "notes", "medications", "appointments", "consents", "edit"):
        page = client.get(f"/patients/{pid}/{path}")
        assert page.status_code == 200, path
        assert 'name="mid"' in page.text, path


def test_unexpected_error_shows_reference_and_rolls_back(app, world, client_for, monkeypatch):
    import app.web.patients as patients_view

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(patients_view, "search_context", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    page = client_for(world.user(r.NURSE)).get("/patients?q=a")
    assert page.status_code == 500
    assert "Nothing was changed" in page.text and "Reference:" in page.text
    assert page.headers["X-Request-ID"] in page.text
