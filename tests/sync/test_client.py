"""The Python sync client: its outbox, its answers to each status, and real HTTP."""
from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from app.domain.ids import new_id
from app.extensions import db
from sync_api.client import (
    HttpTransport, Reply, RequestRefused, SignInNeeded, Store, SyncClient, Unreachable,
)
from tests.sync.builders import observe, register


class Scripted:
    """Answers each request with the next scripted reply, and keeps what was sent."""

    def __init__(self, *replies: Reply):
        self.replies = list(replies)
        self.sent: list[dict] = []

    def __call__(self, method, path, body):
        self.sent.append(body)
        return self.replies.pop(0)


def test_queued_mutations_get_contiguous_seqs_and_leave_the_outbox_when_answered():
    answers = Scripted(Reply(200, {"last_seq": 2, "results": [
        {"mid": "m", "seq": 1, "status": "applied", "entity": "patient", "entity_id": "p",
         "version": 1, "record": {"id": "p", "version": 1}},
        {"mid": "n", "seq": 2, "status": "rejected", "entity": "patient", "entity_id": "q",
         "error": {"code": "invalid", "message": "Given name is required."}}]}))
    client = SyncClient(answers, client_id="unit-client-1")
    client.queue("patient.register", "patient", "p", {}, mid="m")
    client.queue("patient.register", "patient", "q", {}, mid="n")
    assert [m["seq"] for m in client.store.outbox] == [1, 2]
    client.push()
    assert client.store.outbox == []
    assert client.record("patient", "p") == {"id": "p", "version": 1}
    assert client.store.quarantine[0]["error"]["code"] == "invalid"
    assert answers.sent[0]["client_id"] == "unit-client-1"


def test_each_failure_keeps_the_queue_and_says_what_to_do():
    for reply, kind in ((Reply(401, {"message": "Sign in again."}), SignInNeeded),
                        (Reply(503, {"message": "Busy"}, {"Retry-After": "2"}), Unreachable),
                        (Reply(400, {"error": "invalid_request", "message": "Bad"}),
                         RequestRefused)):
        client = SyncClient(Scripted(reply), client_id="unit-client-2")
        client.queue("observation.record", "observation", new_id(), {})
        with pytest.raises(kind):
            client.push()
        assert len(client.store.outbox) == 1


def test_an_out_of_order_answer_from_a_restored_server_renumbers_and_resends():
    client = SyncClient(Scripted(
        Reply(200, {"last_seq": 2, "results": [
            {"mid": "a", "seq": 1, "status": "applied", "entity": "e", "entity_id": "1"},
            {"mid": "b", "seq": 2, "status": "applied", "entity": "e", "entity_id": "2"}]}),
        Reply(409, {"error": "out_of_order", "expected_seq": 2, "last_seq": 1, "results": []}),
        Reply(200, {"last_seq": 3, "results": [
            {"mid": "b", "seq": 2, "status": "applied", "entity": "e", "entity_id": "2"},
            {"mid": "c", "seq": 3, "status": "applied", "entity": "e", "entity_id": "3"}]})),
        client_id="unit-client-3")
    for mid in "ab":
        client.queue("t", "e", mid, {}, mid=mid)
    client.push()
    client.queue("t", "e", "c", {}, mid="c")   # seq 3; the server lost seq 2 in a restore
    client.push()
    resent = client.transport.sent[-1]["mutations"]
    assert [(m["mid"], m["seq"]) for m in resent] == [("b", 2), ("c", 3)]
    assert client.store.outbox == []


def test_the_store_survives_a_save_and_load(tmp_path):
    store = Store(client_id="unit-client-4", cursor="abc", next_seq=3, acked_seq=2)
    store.rows[("patient", "p")] = {"id": "p", "version": 4}
    store.outbox.append({"mid": "m", "seq": 3})
    store.save(tmp_path / "device.json")
    assert Store.load(tmp_path / "device.json") == store


def test_an_older_version_never_replaces_a_newer_one():
    client = SyncClient(Scripted(Reply(200, {
        "cursor": "c", "has_more": False, "reset": False, "last_seq": 0, "changes": [
            {"op": "put", "entity": "patient", "id": "p", "version": 3, "record": {"version": 3}},
            {"op": "put", "entity": "patient", "id": "p", "version": 2, "record": {"version": 2}},
            {"op": "put", "entity": "observation", "id": "o", "version": 1,
             "record": {"patient_id": "p"}},
            {"op": "evict", "entity": "patient", "id": "q"}]})), client_id="unit-client-5")
    client.store.rows[("note", "n")] = {"patient_id": "q", "version": 1}
    client.pull()
    assert client.record("patient", "p") == {"version": 3}
    assert client.record("note", "n") is None      # went with its patient
    assert client.store.cursor == "c"


@pytest.fixture
def live_url(app):
    """The app over real HTTP on a loopback port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_over_http_with_a_bearer_token(live_url, token_for, world):
    clerk = SyncClient(HttpTransport(live_url, token=token_for("registration_clerk")))
    nurse = SyncClient(HttpTransport(live_url, token=token_for("nurse")))
    pid = register(clerk, world.clinics["A"].id)
    db.session.rollback()  # the server's threads write to this SQLite file too
    clerk.sync()
    nurse.pull()
    observe(nurse, pid, value=77)
    nurse.sync()
    clerk.pull()
    assert [r["value"] for (e, _), r in clerk.store.rows.items() if e == "observation"] == [77]
    assert nurse.heartbeat()["last_seq"] == 1
    with pytest.raises(SignInNeeded):
        SyncClient(HttpTransport(live_url, token="crt_not-a-token")).pull()


def test_no_server_is_unreachable_not_a_crash():
    client = SyncClient(HttpTransport("http://127.0.0.1:9", timeout=2))
    client.queue("observation.record", "observation", new_id(), {})
    with pytest.raises(Unreachable):
        client.push()
    assert len(client.store.outbox) == 1
