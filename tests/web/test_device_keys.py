"""The server's part in keeping a device's records encrypted: checking the password a device
locks them under, and opening a device's escrowed queue for its author alone."""
from __future__ import annotations

from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import AuditEvent, MutationResult
from tests.conftest import PASSWORD, config
from tests.js_bridge import call_js


def _session(client) -> dict:
    return client.get("/app/session.json", headers={"Accept": "application/json"}).get_json()


def _escrow(server_key: dict, author: str, mid: str, said: dict) -> dict:
    return call_js("static/idb/escrow.js", [("sealOnce", [server_key, author, mid, said])])[0]


def test_the_device_secret_must_be_the_persons_password(world, client_for):
    nurse_user = world.user(r.NURSE)
    nurse = client_for(nurse_user)
    headers = {"X-CSRFToken": _session(nurse)["shell"]["csrf_token"]}
    wrong = nurse.post("/app/device-secret", json={"password": "not it"}, headers=headers)
    assert wrong.status_code == 422 and "Nothing was changed" in wrong.get_json()["message"]
    right = nurse.post("/app/device-secret", json={"password": PASSWORD},
                       headers=headers)
    assert right.status_code == 204
    outcomes = [e.outcome for e in db.session.query(AuditEvent).filter_by(
        action="device.unlock_secret", user_id=nurse_user.id).order_by(AuditEvent.id)]
    assert outcomes == ["failure", "success"]


def test_a_lost_keys_queue_is_opened_for_its_author_only(world, client_for):
    nurse_user, clinician_user = world.user(r.NURSE), world.user(r.CLINICIAN)
    nurse = client_for(nurse_user)
    session = _session(nurse)
    assert session["escrow_key"]["crv"] == "P-256" and "d" not in session["escrow_key"]
    headers = {"X-CSRFToken": session["shell"]["csrf_token"]}
    queued, refused_before, someone_elses = new_id(), new_id(), new_id()
    said = {"data": {"text": "Reviewed at home visit"}, "base": {}}
    db.session.add(MutationResult(mid=refused_before, client_id="dev-1", seq=1, type="note.write",
                                  payload_hash="x" * 64, status="rejected", user_id=nurse_user.id,
                                  source="sync", result={"error": {"code": "forbidden",
                                                                   "message": "Not your patient."}}))
    db.session.commit()
    parts = [{"mid": queued, "escrow": _escrow(session["escrow_key"], nurse_user.id, queued, said)},
             {"mid": refused_before,
              "escrow": _escrow(session["escrow_key"], nurse_user.id, refused_before, said)},
             {"mid": someone_elses,
              "escrow": _escrow(session["escrow_key"], clinician_user.id, someone_elses, said)}]

    answer = nurse.post("/app/outbox-recovery", json={"parts": parts}, headers=headers)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["opened"] == {queued: said, refused_before: said}
    assert body["refused"] == [someone_elses]
    assert body["rejected"] == {refused_before: {"code": "forbidden", "message": "Not your patient."}}
    [event] = db.session.query(AuditEvent).filter_by(action="device.outbox_recovered").all()
    assert (event.user_id, event.outcome, event.detail) == (
        nurse_user.id, "partial", {"opened": 2, "refused": 1})


def test_a_recovery_request_must_name_its_changes(world, client_for):
    nurse = client_for(world.user(r.NURSE))
    headers = {"X-CSRFToken": _session(nurse)["shell"]["csrf_token"]}
    for body in ({}, {"parts": []}, {"parts": [{"mid": "x", "escrow": {}}]}, {"parts": "all"}):
        answer = nurse.post("/app/outbox-recovery", json=body, headers=headers)
        assert answer.status_code == 400 and "Nothing was opened" in answer.get_json()["message"]


@config(RATELIMIT_ENABLED=True, DEVICE_SECRET_RATE_LIMIT="2 per minute")
def test_password_checks_for_a_device_are_limited_per_person(world, client_for):
    nurse = client_for(world.user(r.NURSE))
    headers = {"X-CSRFToken": _session(nurse)["shell"]["csrf_token"]}
    for _ in range(2):
        assert nurse.post("/app/device-secret", json={"password": "guess"},
                          headers=headers).status_code == 422
    # The right password too: the budget is spent, whatever is guessed next.
    assert nurse.post("/app/device-secret", json={"password": PASSWORD},
                      headers=headers).status_code == 429
    # From another address the same person is still refused; another person is not.
    nurse.environ_base["REMOTE_ADDR"] = "10.9.8.7"
    assert nurse.post("/app/device-secret", json={"password": PASSWORD},
                      headers=headers).status_code == 429
    clinician = client_for(world.user(r.CLINICIAN))
    assert clinician.post("/app/device-secret", json={"password": PASSWORD}, headers={
        "X-CSRFToken": _session(clinician)["shell"]["csrf_token"]}).status_code == 204
