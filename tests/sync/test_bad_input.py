"""Bad input to /sync/v1 (DESIGN.md §5): malformed, oversized or unknown payloads answer
400/413 with the problems listed, an ended session or a bad token answers 401, a refused
caller 403; never a 500, and in every case nothing is applied."""
from __future__ import annotations

import base64
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import (ApiToken, AuditEvent, ChangeLog, MutationResult, Patient, SyncClient,
                        UserSession)
from app.models.types import utcnow
from app.services import tokens
from sync_api.cursor import Cursor
from sync_api.wire import MAX_DEPTH
from tests.conftest import config
from tests.sync.conftest import FlaskTransport

PUSH, PULL, HEARTBEAT, EVENTS = ("/sync/v1/push", "/sync/v1/pull", "/sync/v1/heartbeat",
                                 "/sync/v1/events")
BODY_ROUTES = (PUSH, PULL, HEARTBEAT)
CLIENT_ID = "bad-input-device-1"


# --- Helpers --------------------------------------------------------------------------------

def registration(clinic_id: str, seq: int, **data) -> dict:
    return {"mid": new_id(), "seq": seq, "type": "patient.register", "entity": "patient",
            "entity_id": new_id(),
            "data": {"given_name": "Amina", "family_name": "Odhiambo", "sex": "female",
                     "birth_date": "1990-03-04", "clinic_id": clinic_id, **data}}


def body_for(path: str, **fields) -> dict:
    """A valid body for `path`, with `fields` replacing (or, given as None, removing) keys."""
    body = {"protocol": 1, "client_id": CLIENT_ID}
    if path == PUSH:
        body["mutations"] = []
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def send(transport: FlaskTransport, path: str, body=None, *, raw: bytes | str | None = None,
         content_type: str = "application/json", headers: dict | None = None):
    data = raw if raw is not None else json.dumps(body)
    return transport.test_client.post(path, data=data, content_type=content_type,
                                      headers={**transport.headers, **(headers or {})})


@dataclass(frozen=True)
class State:
    results: int
    changes: int
    patients: int
    clients: tuple


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def state() -> State:
    """What a request could have applied: stored results, changes, patients, and each
    client's last_seq and telemetry."""
    db.session.rollback()
    db.session.expire_all()
    clients = tuple(tuple(row) for row in db.session.execute(
        select(SyncClient.client_id, SyncClient.last_seq, SyncClient.telemetry)
        .order_by(SyncClient.client_id)))
    return State(count(MutationResult), count(ChangeLog), count(Patient), clients)


def assert_refused(response, status: int, code: str | None = None) -> dict:
    """The answer is a JSON error the client can show: error, message, and for 400 problems."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert isinstance(body, dict), response.get_data(as_text=True)
    assert isinstance(body.get("error"), str) and body["error"]
    assert isinstance(body.get("message"), str) and body["message"]
    if code is not None:
        assert body["error"] == code, body
    if status == 400:
        assert body["problems"], body
        for problem in body["problems"]:
            assert isinstance(problem["field"], str) and problem["message"], problem
    return body


def fields(body: dict) -> set[str]:
    return {p["field"] for p in body["problems"]}


@pytest.fixture
def clerk(app, world, transport_for) -> FlaskTransport:
    """A registration clerk's device that has pushed one mutation: last_seq is 1."""
    transport = transport_for(r.REGISTRATION_CLERK)
    first = send(transport, PUSH, body_for(PUSH, mutations=[
        registration(world.clinics["A"].id, 1)], telemetry={"queue_depth": 0}))
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["last_seq"] == 1
    return transport


@pytest.fixture
def before(clerk) -> State:
    return state()


# --- Malformed bodies, on every route that takes one -------------------------------------------

@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("raw, content_type", [
    ("not json at all", "application/json"),
    ('{"protocol": 1, "client_id": ', "application/json"),
    ("", "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    ('{"protocol": 1, "client_id": "bad-input-device-1"}', "text/plain"),
    ("protocol=1&client_id=bad-input-device-1", "application/x-www-form-urlencoded"),
    ("[]", "application/json"),
    ('"a string"', "application/json"),
    ("42", "application/json"),
    ("null", "application/json"),
], ids=["text", "truncated", "empty", "binary", "text-plain", "form", "array", "string",
        "number", "null"])
def test_a_body_that_is_not_a_json_object_is_a_400(clerk, before, path, raw, content_type):
    assert_refused(send(clerk, path, raw=raw, content_type=content_type), 400,
                   "invalid_request")
    assert state() == before


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("raw", [
    "[" * 100_000 + "]" * 100_000,
    '{"protocol": 1, "client_id": "bad-input-device-1", "telemetry": ' + '{"a":' * 5000
    + "1" + "}" * 5000 + "}",
], ids=["deep-array", "deep-object"])
def test_deeply_nested_json_is_a_400_not_a_crash(clerk, before, path, raw):
    assert_refused(send(clerk, path, raw=raw), 400, "invalid_request")
    assert state() == before


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_not_json(clerk, before, path, constant):
    raw = json.dumps(body_for(path)).replace('"protocol": 1', f'"protocol": {constant}')
    assert_refused(send(clerk, path, raw=raw), 400, "invalid_request")
    assert state() == before


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_number_too_long_to_read_is_a_400(clerk, before, path):
    raw = json.dumps(body_for(path)).replace('"protocol": 1', '"protocol": ' + "9" * 5000)
    assert_refused(send(clerk, path, raw=raw), 400, "invalid_request")
    assert state() == before


UNSTORABLE = pytest.mark.parametrize("text", ["\\ud800", "\\udfff", "a\\u0000b"],
                                     ids=["lone-high-surrogate", "lone-low-surrogate", "nul"])


@pytest.mark.postgres
@pytest.mark.parametrize("path", BODY_ROUTES)
@UNSTORABLE
def test_text_no_database_can_store_is_a_400(clerk, before, path, text):
    """An unpaired surrogate cannot be encoded, and PostgreSQL text cannot hold NUL."""
    raw = json.dumps(body_for(path, telemetry={"app_version": "PLACEHOLDER"}))
    body = assert_refused(send(clerk, path, raw=raw.replace("PLACEHOLDER", text)), 400)
    assert fields(body) == {"telemetry.app_version"}
    assert state() == before


@pytest.mark.postgres
@UNSTORABLE
def test_unstorable_text_in_a_mutation_is_named_by_index(clerk, world, before, text):
    good = registration(world.clinics["A"].id, 2)
    bad = registration(world.clinics["A"].id, 3, given_name="PLACEHOLDER",
                       identifiers=[{"system": "mrn", "value": "PLACEHOLDER"}])
    bad["base"] = {"PLACEHOLDER": 1}
    raw = json.dumps(body_for(PUSH, mutations=[good, bad])).replace("PLACEHOLDER", text)
    answer = assert_refused(send(clerk, PUSH, raw=raw), 400)
    assert per_mutation(answer) == {1: {"mid": bad["mid"], "fields": {
        "data.given_name", "data.identifiers.0.value", "base"}}}
    assert state() == before


def test_nesting_deeper_than_any_request_needs_is_a_400(clerk, world, before):
    deep: dict = {}
    inner = deep
    for _ in range(40):
        inner["a"] = {}
        inner = inner["a"]
    mutation = {**registration(world.clinics["A"].id, 2), "base": deep}
    answer = assert_refused(send(clerk, PUSH, body_for(PUSH, mutations=[mutation])), 400)
    [problem] = answer["problems"]
    assert (problem["index"], problem["mid"]) == (0, mutation["mid"])
    assert problem["field"].startswith("base.a.a.")
    assert state() == before



def test_an_unpaired_surrogate_sent_as_raw_bytes_is_named_by_index(clerk, world, before):
    """Not only as an escape: the JSON decoder also lets the bytes ED A0 80 through."""
    bad = registration(world.clinics["A"].id, 2, given_name="PLACEHOLDER")
    raw = json.dumps(body_for(PUSH, mutations=[bad])).encode()
    answer = assert_refused(send(clerk, PUSH, raw=raw.replace(b"PLACEHOLDER", b"A\xed\xa0\x80")),
                            400)
    assert per_mutation(answer) == {0: {"mid": bad["mid"], "fields": {"data.given_name"}}}
    assert state() == before


def nested(levels: int) -> dict:
    deep: dict = {"a": 1}
    for _ in range(levels - 1):
        deep = {"a": deep}
    return deep


def test_nesting_is_refused_from_the_first_level_past_the_limit(clerk, world, before):
    # mutations.0.base and then the levels: the deepest value sits at depth 3 + levels.
    at_limit = {**registration(world.clinics["A"].id, 2), "base": nested(MAX_DEPTH - 3)}
    past = {**registration(world.clinics["A"].id, 2), "base": nested(MAX_DEPTH - 2)}
    refused = assert_refused(send(clerk, PUSH, body_for(PUSH, mutations=[past])), 400)
    assert [p["index"] for p in refused["problems"]] == [0]
    assert state() == before
    accepted = send(clerk, PUSH, body_for(PUSH, mutations=[at_limit]))
    assert accepted.status_code == 200, accepted.get_json()
    assert accepted.get_json()["results"][0]["status"] == "applied"


def test_text_with_hangul_is_stored_as_sent(clerk, world):
    """The bytes of Hangul start with ED too: such a body is checked in full, and passes."""
    mutation = registration(world.clinics["A"].id, 2, given_name="한국")
    answer = send(clerk, PUSH, body_for(PUSH, mutations=[mutation]))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["results"][0]["record"]["given_name"] == "한국"

@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("change, field", [
    ({"protocol": 2}, "protocol"),
    ({"protocol": "1"}, "protocol"),
    ({"protocol": None}, "protocol"),
    ({"client_id": None}, "client_id"),
    ({"client_id": "short"}, "client_id"),
    ({"client_id": "has spaces in it"}, "client_id"),
    ({"client_id": "x" * 65}, "client_id"),
    ({"client_id": 12345678}, "client_id"),
    ({"telemetry": "full"}, "telemetry"),
    ({"telemetry": {"queue_depth": -1}}, "telemetry.queue_depth"),
    ({"telemetry": {"queue_depth": 1.5}}, "telemetry.queue_depth"),
    ({"telemetry": {"storage_persisted": "yes"}}, "telemetry.storage_persisted"),
    ({"telemetry": {"oldest_pending_at": "yesterday"}}, "telemetry.oldest_pending_at"),
    ({"telemetry": {"battery": 3}}, "telemetry"),
    ({"surprise": True}, "surprise"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else v)
def test_a_bad_field_is_a_400_that_names_it(clerk, before, path, change, field):
    body = body_for(path)
    for key, value in change.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    answer = assert_refused(send(clerk, path, body), 400, "invalid_request")
    assert field in fields(answer), answer
    assert "Nothing was applied" in answer["message"]
    assert state() == before


def test_several_bad_fields_are_all_listed(clerk, before):
    answer = assert_refused(send(clerk, HEARTBEAT, {"protocol": 3, "client_id": "?",
                                                    "extra": 1}), 400)
    assert fields(answer) == {"protocol", "client_id", "extra"}
    assert state() == before


@pytest.mark.parametrize("change, field", [
    ({"cursor": 17}, "cursor"),
    ({"cursor": "c" * 2001}, "cursor"),
    ({"limit": 0}, "limit"),
    ({"limit": 5001}, "limit"),
    ({"limit": "100"}, "limit"),
    ({"limit": 2.5}, "limit"),
    ({"limit": True}, "limit"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else v)
def test_a_bad_pull_field_is_a_400(clerk, before, change, field):
    answer = assert_refused(send(clerk, PULL, body_for(PULL, **change)), 400)
    assert fields(answer) == {field}
    assert state() == before


def test_a_whole_number_written_as_a_float_is_taken_as_that_number(clerk, world):
    """A browser cannot tell 2.0 from 2; the server answers with the integer either way."""
    pulled = send(clerk, PULL, body_for(PULL, limit=5.0))
    assert pulled.status_code == 200, pulled.get_json()
    pushed = send(clerk, PUSH, body_for(PUSH, mutations=[
        {**registration(world.clinics["A"].id, 2), "seq": 2.0}]))
    assert pushed.status_code == 200, pushed.get_json()
    answer = pushed.get_json()
    assert answer["last_seq"] == 2 and isinstance(answer["last_seq"], int)
    assert isinstance(answer["results"][0]["seq"], int)
    # Written as 2, not 2.0 (wherever the key falls: a push answer's keys are not sorted).
    assert re.search(r'"last_seq":2[,}]', pushed.get_data(as_text=True).replace(" ", ""))
    assert '"last_seq":2,' in send(clerk, PULL, body_for(PULL)).get_data(as_text=True)


@pytest.mark.parametrize("cursor", [
    "not-a-cursor",
    "!!!",
    Cursor("epoch", "scope", 0, 0, 0).encode(),
])
def test_an_unreadable_cursor_starts_afresh_rather_than_failing(clerk, cursor):
    pulled = send(clerk, PULL, body_for(PULL, cursor=cursor))
    assert pulled.status_code == 200, pulled.get_json()
    assert pulled.get_json()["reset"] is True


def test_a_tampered_cursor_starts_afresh_rather_than_failing(clerk):
    """A cursor the server issued, edited (and so no longer signed) to hold numbers no
    database column can take."""
    first = send(clerk, PULL, body_for(PULL)).get_json()
    real = Cursor.decode(first["cursor"].rpartition(".")[0])
    for tampered in (
        Cursor(real.epoch, real.scope, -(10**30), real.seq, real.gen),
        Cursor(real.epoch, real.scope, real.txid, -(10**30), real.gen),
        Cursor(real.epoch, real.scope, real.txid, real.seq, -(10**30)),
        Cursor(real.epoch, real.scope, real.txid, real.seq, real.gen, (10**30, "", "")),
        Cursor(real.epoch, real.scope, real.txid, real.seq, real.gen, (-1, "", "")),
        Cursor(real.epoch, real.scope, real.txid, real.seq, real.gen, (99, "", "")),
        Cursor(real.epoch, real.scope, real.txid, real.seq, real.gen, (0, "", "a\x00b")),
    ):
        pulled = send(clerk, PULL, body_for(PULL, cursor=tampered.encode()))
        assert pulled.status_code == 200, (tampered, pulled.get_json())
    nested = base64.urlsafe_b64encode(b"[" * 1400).decode()
    assert send(clerk, PULL, body_for(PULL, cursor=nested)).status_code == 200


# --- Push: the batch and its mutations -------------------------------------------------------

@pytest.mark.parametrize("mutations", [None, {}, "all of them", 3],
                         ids=["missing", "object", "string", "number"])
def test_mutations_must_be_a_list(clerk, before, mutations):
    body = body_for(PUSH)
    if mutations is None:
        del body["mutations"]
    else:
        body["mutations"] = mutations
    answer = assert_refused(send(clerk, PUSH, body), 400, "invalid_request")
    assert fields(answer) == {"mutations"}
    assert state() == before


def per_mutation(answer: dict) -> dict[int, dict]:
    """Problems by mutation index: {index: {"mid": ..., "fields": {...}}}."""
    found: dict[int, dict] = {}
    for problem in answer["problems"]:
        entry = found.setdefault(problem["index"], {"mid": problem["mid"], "fields": set()})
        assert entry["mid"] == problem["mid"]
        entry["fields"].add(problem["field"])
    return found


@pytest.mark.parametrize("change, expected", [
    ({"mid": None}, {"mid"}),
    ({"type": None, "entity": None}, {"type", "entity"}),
    ({"seq": None}, {"seq"}),
    ({"data": None}, {"data"}),
    ({"entity_id": None}, {"entity_id"}),
    ({"seq": "2"}, {"seq"}),
    ({"seq": 0}, {"seq"}),
    ({"seq": 2.5}, {"seq"}),
    ({"entity_id": "not-a-uuid"}, {"entity_id"}),
    ({"data": ["a", "list"]}, {"data"}),
    ({"base_version": 0}, {"base_version"}),
    ({"base": "old"}, {"base"}),
    ({"deps": "one"}, {"deps"}),
    ({"deps": ["not-a-uuid"]}, {"deps.0"}),
    ({"client_ts": 1700000000}, {"client_ts"}),
    ({"entity": "x" * 41}, {"entity"}),
    ({"priority": "high"}, {"priority"}),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else ",".join(sorted(v)))
def test_a_mutation_with_missing_or_ill_typed_fields_is_a_400(clerk, world, before, change,
                                                              expected):
    mutation = registration(world.clinics["A"].id, 2)
    for key, value in change.items():
        if value is None:
            mutation.pop(key)
        else:
            mutation[key] = value
    answer = assert_refused(send(clerk, PUSH, body_for(PUSH, mutations=[mutation])), 400,
                            "invalid_request")
    mid = mutation["mid"] if "mid" in mutation else None
    assert per_mutation(answer) == {0: {"mid": mid, "fields": expected}}
    assert answer["message"].startswith("Nothing was applied. mutation 0:")
    assert state() == before


def test_an_unknown_mutation_type_is_a_400(clerk, world, before):
    mutation = {**registration(world.clinics["A"].id, 2), "type": "patient.delete"}
    answer = assert_refused(send(clerk, PUSH, body_for(PUSH, mutations=[mutation])), 400)
    assert per_mutation(answer) == {0: {"mid": mutation["mid"], "fields": {"type"}}}
    [problem] = answer["problems"]
    assert "patient.register" in problem["message"]  # the choices are listed
    assert state() == before


@pytest.mark.parametrize("item", [None, 7, "mutation", ["a"]])
def test_a_mutation_that_is_not_an_object_is_named_by_index(clerk, world, before, item):
    good = registration(world.clinics["A"].id, 2)
    answer = assert_refused(send(clerk, PUSH, body_for(PUSH, mutations=[good, item])), 400)
    assert per_mutation(answer) == {1: {"mid": None, "fields": {""}}}
    assert state() == before


def test_every_bad_mutation_is_listed_with_its_index_and_mid(clerk, world, before):
    clinic = world.clinics["A"].id
    batch = [registration(clinic, 2), registration(clinic, 3), registration(clinic, 4),
             registration(clinic, 5), registration(clinic, 6)]
    batch[1]["entity_id"] = "nope"
    del batch[3]["data"]
    batch[3]["seq"] = -5
    batch[4]["mid"] = 12
    answer = assert_refused(send(clerk, PUSH, body_for(PUSH, mutations=batch)), 400)
    assert per_mutation(answer) == {
        1: {"mid": batch[1]["mid"], "fields": {"entity_id"}},
        3: {"mid": batch[3]["mid"], "fields": {"data", "seq"}},
        4: {"mid": None, "fields": {"mid"}},
    }
    assert answer["message"].startswith("Nothing was applied. mutation 1:")
    assert "more problems listed" in answer["message"]
    # The good mutations in the batch were not applied either.
    assert state() == before


def test_bad_fields_and_bad_mutations_are_listed_together(clerk, world, before):
    mutation = {**registration(world.clinics["A"].id, 2), "type": "nope"}
    answer = assert_refused(send(clerk, PUSH, body_for(PUSH, protocol=2, mutations=[mutation])),
                            400)
    assert {(p.get("index"), p["field"]) for p in answer["problems"]} == {
        (None, "protocol"), (0, "type")}
    assert state() == before


@pytest.mark.parametrize("path", BODY_ROUTES)
@config(SYNC_MAX_BODY_BYTES=2000)
def test_a_body_over_the_size_limit_is_a_413(clerk, before, path):
    small = send(clerk, path, body_for(path))
    assert small.status_code == 200, small.get_json()
    before = state()
    big = body_for(path, telemetry={"app_version": "v"}, padding="x" * 3000)
    answer = assert_refused(send(clerk, path, big), 413, "too_large")
    assert answer["max_bytes"] == 2000
    assert state() == before


@config(SYNC_MAX_BODY_BYTES=2000)
def test_a_streamed_body_over_the_size_limit_is_a_413(clerk, before):
    """No Content-Length (a chunked upload): the limit still holds as the body is read."""
    raw = json.dumps(body_for(PUSH, padding="x" * 3000)).encode()
    response = clerk.test_client.post(PUSH, input_stream=io.BytesIO(raw),
                                      content_type="application/json", headers=clerk.headers,
                                      environ_overrides={"wsgi.input_terminated": True})
    assert_refused(response, 413, "too_large")
    assert state() == before


@config(SYNC_MAX_BATCH=3)
def test_more_mutations_than_a_batch_holds_is_a_413(clerk, world, before):
    clinic = world.clinics["A"].id
    answer = assert_refused(send(clerk, PUSH, body_for(PUSH, mutations=[
        registration(clinic, seq) for seq in range(2, 6)])), 413, "too_many_mutations")
    assert answer["max_batch"] == 3
    assert state() == before
    fits = send(clerk, PUSH, body_for(PUSH, mutations=[
        registration(clinic, seq) for seq in range(2, 5)]))
    assert fits.status_code == 200 and fits.get_json()["last_seq"] == 4


def test_data_that_fails_its_types_schema_is_rejected_not_a_400(clerk, world, before):
    """One bad record answers for itself and never blocks the queue behind it."""
    clinic = world.clinics["A"].id
    bad = registration(clinic, 2, sex="sometimes", birth_date="last spring")
    good = registration(clinic, 3)
    pushed = send(clerk, PUSH, body_for(PUSH, mutations=[bad, good]))
    assert pushed.status_code == 200, pushed.get_json()
    answer = pushed.get_json()
    assert answer["last_seq"] == 3
    rejected, applied = answer["results"]
    assert (rejected["mid"], rejected["seq"], rejected["status"]) == (bad["mid"], 2, "rejected")
    assert rejected["error"]["code"] == "invalid"
    assert {p["field"] for p in rejected["error"]["problems"]} == {"sex", "birth_date"}
    assert (applied["mid"], applied["status"]) == (good["mid"], "applied")
    after = state()
    assert after.results == before.results + 2
    assert after.patients == before.patients + 1
    assert dict((c[0], c[1]) for c in after.clients)[CLIENT_ID] == 3


@pytest.mark.postgres
@pytest.mark.parametrize("when", ["9999-12-31T23:00:00-12:00", "0001-01-01T00:30:00+14:00"])
def test_a_time_outside_the_storable_range_is_rejected_not_a_crash(clerk, world, register,
                                                                   before, when):
    """Valid ISO 8601 with a zone, but in UTC it falls outside years 1-9999."""
    pid = register(world.actor(r.REGISTRATION_CLERK))
    before = state()
    booking = {"mid": new_id(), "seq": 2, "type": "appointment.book", "entity": "appointment",
               "entity_id": new_id(), "data": {"patient_id": pid, "starts_at": when}}
    pushed = send(clerk, PUSH, body_for(PUSH, mutations=[booking]))
    assert pushed.status_code == 200, pushed.get_json()
    [result] = pushed.get_json()["results"]
    assert (result["status"], result["error"]["code"]) == ("rejected", "invalid")
    assert state().results == before.results + 1
    answer = assert_refused(send(clerk, HEARTBEAT, body_for(
        HEARTBEAT, telemetry={"oldest_pending_at": when})), 400)
    assert fields(answer) == {"telemetry.oldest_pending_at"}


# --- Who is asking ------------------------------------------------------------------------------

ROUTES = [("POST", p) for p in BODY_ROUTES] + [("GET", EVENTS)]


def call(test_client, method: str, path: str, headers: dict | None = None):
    if method == "GET":
        return test_client.get(path, headers=headers or {})
    return test_client.post(path, json=body_for(path), headers=headers or {})


@pytest.mark.parametrize("method, path", ROUTES)
@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-token",
    "Bearer crt_made-up", "Token crt_made-up", "Bearer crt_\u00e9t\u00e9",
], ids=["none", "empty", "bare-scheme", "blank-token", "basic", "unknown", "made-up-crt",
        "other-scheme", "latin-1"])
def test_without_valid_credentials_it_is_a_401(clerk, before, app, method, path, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = call(app.test_client(), method, path, headers)
    assert_refused(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert state() == before


@pytest.mark.parametrize("method, path", ROUTES)
def test_a_revoked_token_is_a_401(clerk, world, method, path):
    for token in db.session.execute(select(ApiToken)).scalars():
        token.revoked_at = utcnow()
    db.session.commit()
    before = state()
    body = body_for(path)
    if path == PUSH:
        body["mutations"] = [registration(world.clinics["A"].id, 2)]
    response = (clerk.test_client.get(path, headers=clerk.headers) if method == "GET" else
                send(clerk, path, body))
    assert_refused(response, 401, "unauthenticated")
    assert state() == before


def test_a_token_revoked_through_another_server_stops_working_within_seconds(clerk, world,
                                                                            monkeypatch):
    # The clerk's device has just pushed: its token's answer is kept in this process. Another
    # app server revokes it, which this one cannot see happen.
    with db.engine.begin() as elsewhere:
        elsewhere.execute(update(ApiToken).values(revoked_at=utcnow()))
    later = time.monotonic() + tokens.BEARER_KEPT_SECONDS
    monkeypatch.setattr(tokens, "_clock", lambda: later)
    before = state()
    assert_refused(send(clerk, PUSH, body_for(PUSH, mutations=[
        registration(world.clinics["A"].id, 2)])), 401, "unauthenticated")
    assert state() == before


def test_a_token_of_a_disabled_account_is_a_401(clerk, world, before):
    world.user(r.REGISTRATION_CLERK).disabled_at = utcnow()
    db.session.commit()
    before = state()
    assert_refused(send(clerk, PUSH, body_for(PUSH, mutations=[
        registration(world.clinics["A"].id, 2)])), 401, "unauthenticated")
    assert state() == before


@pytest.mark.parametrize("role", [r.CLINIC_ADMIN, r.ORG_ADMIN, r.PRIVACY_OFFICER])
@pytest.mark.parametrize("method, path", ROUTES)
def test_a_role_that_does_not_sync_patients_is_a_403(clerk, before, world, transport_for, role,
                                                     method, path):
    admin = transport_for(role)
    before = state()
    body = body_for(path, client_id="admin-device-1")
    if path == PUSH:
        body["mutations"] = [registration(world.clinics["A"].id, 1)]
    response = (admin.test_client.get(path, headers=admin.headers) if method == "GET" else
                send(admin, path, body))
    assert_refused(response, 403, "forbidden")
    assert state() == before


def test_another_users_client_id_is_a_403(clerk, world, transport_for, before):
    nurse = transport_for(r.NURSE)
    before = state()
    for path in BODY_ROUTES:
        assert_refused(send(nurse, path, body_for(path)), 403, "client_mismatch")
    assert state() == before


# --- Browser sessions ----------------------------------------------------------------------------

def session_transport(client_for, user) -> FlaskTransport:
    return FlaskTransport(client_for(user))


def age_sessions(user, **ago: timedelta) -> None:
    db.session.rollback()
    for row in db.session.execute(select(UserSession).where(UserSession.user_id == user.id)
                                  ).scalars():
        for column, delta in ago.items():
            setattr(row, column, utcnow() - delta)
    db.session.commit()


def end_reasons(user) -> list[str | None]:
    db.session.rollback()
    db.session.expire_all()
    return [row.end_reason for row in db.session.execute(
        select(UserSession).where(UserSession.user_id == user.id)).scalars()]


def test_a_signed_in_browser_syncs_with_its_session(app, world, client_for):
    clerk = session_transport(client_for, world.user(r.REGISTRATION_CLERK))
    pushed = send(clerk, PUSH, body_for(PUSH, mutations=[registration(world.clinics["A"].id, 1)]))
    assert pushed.status_code == 200, pushed.get_json()
    assert pushed.get_json()["results"][0]["status"] == "applied"


@pytest.mark.parametrize("method, path", ROUTES)
def test_a_session_that_ended_while_idle_is_a_401_and_applies_nothing(app, world, client_for,
                                                                      method, path):
    user = world.user(r.REGISTRATION_CLERK)
    browser = session_transport(client_for, user)
    first = send(browser, PUSH, body_for(PUSH, mutations=[registration(world.clinics["A"].id, 1)]))
    assert first.status_code == 200, first.get_json()
    age_sessions(user, last_seen_at=app.config["SESSION_IDLE_TIMEOUT"] + timedelta(minutes=1))
    before = state()
    body = body_for(path, telemetry={"queue_depth": 9})
    if path == PUSH:
        body["mutations"] = [registration(world.clinics["A"].id, 2)]
    response = (browser.test_client.get(path) if method == "GET" else send(browser, path, body))
    answer = assert_refused(response, 401, "unauthenticated")
    assert "nothing was applied" in answer["message"].lower()
    assert state() == before
    assert end_reasons(user) == ["idle"]


@config(SESSION_IDLE_TIMEOUT=timedelta(seconds=30))
def test_a_short_idle_timeout_ends_the_sync_session_too(app, world, client_for):
    user = world.user(r.NURSE)
    browser = session_transport(client_for, user)
    assert send(browser, HEARTBEAT, body_for(HEARTBEAT)).status_code == 200
    age_sessions(user, last_seen_at=timedelta(seconds=31))
    before = state()
    assert_refused(send(browser, HEARTBEAT, body_for(HEARTBEAT, telemetry={"queue_depth": 3})),
                   401, "unauthenticated")
    assert state() == before


def test_a_signed_out_browser_is_a_401(app, world, client_for):
    user = world.user(r.REGISTRATION_CLERK)
    browser = session_transport(client_for, user)
    db.session.execute(UserSession.__table__.update().values(ended_at=utcnow(),
                                                             end_reason="signed_out"))
    db.session.commit()
    before = state()
    assert_refused(send(browser, PUSH, body_for(PUSH, mutations=[
        registration(world.clinics["A"].id, 1)])), 401, "unauthenticated")
    assert state() == before


def page_csrf_token(test_client) -> str:
    html = test_client.get("/patients").get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html)[1]


@config(WTF_CSRF_ENABLED=True)
@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_session_post_needs_the_pages_csrf_token(app, world, client_for, path):
    browser = session_transport(client_for, world.user(r.REGISTRATION_CLERK))
    body = body_for(path)
    if path == PUSH:
        body["mutations"] = [registration(world.clinics["A"].id, 1)]
    before = state()
    for headers in ({}, {"X-CSRFToken": "forged"}):
        answer = assert_refused(send(browser, path, body, headers=headers), 403, "csrf_failed")
        assert "nothing was applied" in answer["message"].lower()
        assert state() == before
    token = page_csrf_token(browser.test_client)
    accepted = send(browser, path, body, headers={"X-CSRFToken": token})
    assert accepted.status_code == 200, accepted.get_json()
    if path == PUSH:
        assert accepted.get_json()["results"][0]["status"] == "applied"


@config(WTF_CSRF_ENABLED=True)
def test_a_bearer_client_needs_no_csrf_token(clerk, world):
    pushed = send(clerk, PUSH, body_for(PUSH, mutations=[registration(world.clinics["A"].id, 2)]))
    assert pushed.status_code == 200, pushed.get_json()


@config(WTF_CSRF_ENABLED=True)
def test_an_ended_session_is_a_401_before_any_csrf_check(app, world, client_for):
    """The device must be told to sign in again, not to reload a page."""
    user = world.user(r.REGISTRATION_CLERK)
    browser = session_transport(client_for, user)
    age_sessions(user, last_seen_at=app.config["SESSION_IDLE_TIMEOUT"] + timedelta(minutes=1))
    assert_refused(send(browser, HEARTBEAT, body_for(HEARTBEAT)), 401, "unauthenticated")


# --- Routing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, status", [
    ("GET", PUSH, 405), ("PUT", PULL, 405), ("DELETE", HEARTBEAT, 405), ("POST", EVENTS, 405),
    ("POST", "/sync/v1/openapi.json", 405), ("POST", "/sync/v1/nothing", 404),
    ("POST", "/sync/v2/push", 404),
])
def test_a_wrong_method_or_path_answers_json(clerk, before, method, path, status):
    response = clerk.test_client.open(path, method=method, json=body_for(PUSH),
                                      headers=clerk.headers)
    assert_refused(response, status)
    if status == 405:
        assert response.headers.get("Allow")
    assert state() == before


@pytest.mark.parametrize("named", [{"nested": ["object"]}, ["a", "list"], 7, "not-an-id"])
def test_a_refused_mutation_naming_its_patient_oddly_is_answered_and_audited(
        clerk, world, named):
    """A mutation refused for its data still gets its answer, and the access log its event:
    an odd `patient_id` in unchecked data must not break the log (and so the whole push)."""
    pushed = send(clerk, PUSH, body_for(PUSH, mutations=[{
        "mid": new_id(), "seq": 2, "type": "patient.identifier.add",
        "entity": "patient_identifier", "entity_id": new_id(), "data": {"patient_id": named}}]))
    assert pushed.status_code == 200, pushed.get_json()
    assert pushed.get_json()["results"][0]["status"] == "rejected"
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "mutation.patient.identifier.add")) == 1
