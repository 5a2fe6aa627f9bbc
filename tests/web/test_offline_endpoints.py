"""What the server gives the offline app: its worker, manifest, templates and session; and the
audit of a discarded change."""
from __future__ import annotations

import json

from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import AuditEvent, MutationResult


def test_the_worker_is_stamped_with_a_version_that_changes_with_the_release(app):
    client = app.test_client()
    first = client.get("/sw.js")
    assert first.status_code == 200 and first.mimetype == "text/javascript"
    assert first.headers["Cache-Control"] == "no-cache"
    body = first.get_data(as_text=True)
    assert "__SHELL_VERSION__" not in body and "__SHELL_ASSETS__" not in body
    version = body.split('const VERSION = "', 1)[1].split('"', 1)[0]
    assets = json.loads(body.split("const ASSETS = ", 1)[1].split(";", 1)[0])
    assert f"/app/templates.json?v={version}" in assets and "/static/sw/pages.js" in assets
    for asset in assets:
        with client.get(asset) as answer:
            assert answer.status_code == 200, asset

    app.config["APP_RELEASE"] = "next"
    assert f'const VERSION = "{version}"' not in client.get("/sw.js").get_data(as_text=True)


def test_the_manifest_makes_an_installable_standalone_app(app):
    client = app.test_client()
    manifest = client.get("/manifest.webmanifest").get_json(force=True)
    assert manifest["display"] == "standalone" and manifest["start_url"] == "/"
    sizes = {(i["sizes"], i["purpose"]) for i in manifest["icons"]}
    assert {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")} <= sizes


def test_the_session_says_who_and_what_they_may_do(world, client_for):
    nurse = client_for(world.user(r.NURSE))
    session = nurse.get("/app/session.json", headers={"Accept": "application/json"}).get_json()
    assert session["offline"] is True and session["home_station"] == "triage"
    assert session["user_id"] == world.user(r.NURSE).id
    assert session["can"]["observation_record"] is True and session["can"]["medication_dispense"] is False
    assert "patient.register" in session["schemas"]["types"]
    admin = client_for(world.user(r.CLINIC_ADMIN))
    assert admin.get("/app/session.json").get_json()["offline"] is False


def test_a_discard_is_audited_only_for_the_persons_own_refused_change(world, client_for, app):
    nurse_user = world.user(r.NURSE)
    nurse = client_for(nurse_user)
    refused, applied = new_id(), new_id()
    for mid, status in ((refused, "rejected"), (applied, "applied")):
        db.session.add(MutationResult(mid=mid, client_id="dev-1", seq=1 if status == "rejected" else 2,
                                      type="appointment.book", payload_hash="x" * 64, status=status,
                                      result={}, user_id=nurse_user.id, source="sync"))
    db.session.commit()
    token = nurse.get("/app/session.json").get_json()["shell"]["csrf_token"]
    headers = {"X-CSRFToken": token}

    assert nurse.post("/device/discarded", json={"mid": applied}, headers=headers).status_code == 404
    other = client_for(world.user(r.CLINICIAN))
    other_token = other.get("/app/session.json").get_json()["shell"]["csrf_token"]
    assert other.post("/device/discarded", json={"mid": refused},
                      headers={"X-CSRFToken": other_token}).status_code == 404

    answer = nurse.post("/device/discarded", json={"mid": refused, "type": "appointment.book"},
                        headers=headers)
    assert answer.status_code == 200
    events = db.session.query(AuditEvent).filter_by(action="mutation.discarded").all()
    assert [(e.user_id, e.detail["mid"]) for e in events] == [(nurse_user.id, refused)]


def test_pages_shown_from_the_device_are_audited_with_the_devices_time(world, client_for):
    nurse_user = world.user(r.NURSE)
    nurse = client_for(nurse_user)
    patient = new_id()
    answer = nurse.post("/device/reads", json={"client_id": "dev-1", "reads": [
        {"action": "patient.read", "patient_ids": [patient], "at": "2026-11-21T10:04:00.000Z",
         "detail": {"page": "clinical/vitals.html", "secret": "dropped"}},
        {"action": "patient.search", "patient_ids": [], "at": "2026-11-21T10:05:00.000Z", "detail": {"q": "amina"}},
    ]})
    assert answer.status_code == 200 and answer.get_json()["recorded"] == 2
    events = db.session.query(AuditEvent).filter(AuditEvent.user_id == nurse_user.id,
                                                 AuditEvent.action.in_(["patient.read", "patient.search"])).all()
    read = next(e for e in events if e.action == "patient.read")
    assert read.patient_id == patient
    assert read.detail == {"source": "device", "at": "2026-11-21T10:04:00.000Z", "page": "clinical/vitals.html"}
    assert next(e for e in events if e.action == "patient.search").detail["q"] == "amina"

    refused = nurse.post("/device/reads", json={"reads": [{"action": "patient.delete", "patient_ids": []}]})
    assert refused.status_code == 400


def test_messages_left_for_the_next_page_are_given_once(app):
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["_flashes"] = [("success", "Visit started at Triage.")]
    assert client.get("/app/messages.json").get_json() == {
        "messages": [{"category": "success", "text": "Visit started at Triage."}]}
    assert client.get("/app/messages.json").get_json() == {"messages": []}


def test_asking_who_is_signed_in_leaves_the_messages_for_the_page(world, client_for):
    nurse = client_for(world.user(r.NURSE))
    with nurse.session_transaction() as sess:
        sess["_flashes"] = [("success", "Visit started at Triage.")]
    assert "messages" not in nurse.get("/app/session.json").get_json()["shell"]
    assert nurse.get("/app/messages.json").get_json()["messages"] == [
        {"category": "success", "text": "Visit started at Triage."}]
