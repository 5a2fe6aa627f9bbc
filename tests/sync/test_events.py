"""Live pokes (DESIGN.md §5): a write in a clinic tells that clinic's listening devices to pull.

In-process through Flask's test client on SQLite and PostgreSQL, then with two gunicorn
servers on one PostgreSQL database, where the poke must cross from one server to the other.
Timeouts are generous on purpose: these tests say whether a poke arrives, not how fast.
"""
from __future__ import annotations

import http.client
import json
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import create_app
from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import Clinic, Membership, Organization, User
from app.services import tokens
from tests import gunicorn
from tests.conftest import BASE_OVERRIDES, PG_URL, hashed_password, pg_databases

ROOT = Path(__file__).resolve().parents[2]
ARRIVES = 10.0     # seconds a poke may take before the test calls it lost
QUIET = 1.0        # seconds to watch for a wrong poke: it would come with the right one
END = object()     # the stream ended

FAST_STREAMS = {
    "SYNC_EVENTS_MAX_SECONDS": 30.0,        # a safety net: the tests close streams themselves
    "SYNC_EVENTS_KEEPALIVE_SECONDS": 0.1,   # the reader sees a chunk often, so it stops quickly
    "SYNC_EVENTS_POLL_SECONDS": 0.05,
    "SYNC_EVENTS_IDLE_SECONDS": 0.3,
}


@pytest.fixture
def app_overrides() -> dict:
    return FAST_STREAMS


class Stream:
    """A device listening on /sync/v1/events; a thread reads the events as they arrive."""

    def __init__(self, chunks):
        self._chunks = chunks
        self._events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.ended = False
        self.retries: list[int] = []  # each reconnect delay the server asked for, in ms
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="test-event-stream", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with closing(self._chunks) as chunks:
                buffer = ""
                for chunk in chunks:
                    *blocks, buffer = (buffer + chunk).split("\n\n")
                    for block in blocks:
                        self.retries += _retry_fields(block)
                    for name in filter(None, map(_event_name, blocks)):
                        self._events.put(name)
                    if self._stop.is_set():
                        return
        except Exception as exc:  # reported by close(), in the test's own thread
            self.error = exc
        finally:
            self._events.put(END)

    def next_event(self, timeout: float) -> str | None:
        """The next event's name; None when none came in time or the stream has ended."""
        if self.ended:
            return None
        try:
            name = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if name is END:
            self.ended = True
            return None
        return name

    def wait_for(self, wanted: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            name = self.next_event(left)
            if name is None:
                return False
            if name == wanted:
                return True
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the event stream did not stop"
        if self.error is not None:
            raise self.error


def _event_name(block: str) -> str | None:
    for line in block.splitlines():
        if line.startswith("event:"):
            return line.partition(":")[2].strip()
    return None


def _retry_fields(block: str) -> list[int]:
    return [int(line.partition(":")[2]) for line in block.splitlines() if line.startswith("retry:")]


def _eventually(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _registration(clinic_id: str, seq: int, **data) -> dict:
    return {"mid": new_id(), "seq": seq, "type": "patient.register", "entity": "patient",
            "entity_id": new_id(),
            "data": {"given_name": "Amina", "family_name": "Odhiambo", "sex": "female",
                     "birth_date": "1991-03-02", "clinic_id": clinic_id, **data}}


def _push_body(*mutations: dict) -> dict:
    return {"protocol": 1, "client_id": "events-" + new_id(), "mutations": list(mutations)}


# In-process -------------------------------------------------------------------------------

def _test_client_chunks(test_client, token: str):
    response = test_client.get("/sync/v1/events", headers={"Authorization": f"Bearer {token}"},
                               buffered=False)
    try:
        assert response.status_code == 200, response.status_code
        for chunk in response.response:
            yield chunk.decode()
    finally:
        response.close()  # runs the stream's own clean-up: it unsubscribes


@pytest.fixture
def hub(app):
    """The app's poke hub; after the test its listener must stop by itself."""
    pokes = app.extensions["pokes"]
    yield pokes
    assert _eventually(lambda: not pokes.running, 10), \
        "the poke listener kept running without subscribers"


@pytest.fixture
def listen(app, hub, token_for):
    """listen(role, clinic='A') -> a Stream that has received "ready"."""
    streams: list[Stream] = []

    def _listen(role: str = "nurse", clinic: str = "A") -> Stream:
        stream = Stream(_test_client_chunks(app.test_client(), token_for(role, clinic)))
        streams.append(stream)
        assert stream.wait_for("ready", ARRIVES), "the stream did not start"
        return stream

    yield _listen
    for stream in streams:
        stream.close()


@pytest.fixture
def push(transport_for, world):
    """push(*mutations, role='registration_clerk', clinic='A') -> the push answer's results."""
    def _push(*mutations: dict, role: str = "registration_clerk", clinic: str = "A") -> list:
        reply = transport_for(role, clinic)("POST", "/sync/v1/push", _push_body(*mutations))
        assert reply.status == 200, reply.body
        return reply.body["results"]
    return _push


@pytest.mark.postgres
def test_a_push_pokes_the_devices_of_its_clinic_and_no_other(listen, push, world):
    colleague, elsewhere = listen("nurse", "A"), listen("nurse", "B")

    [result] = push(_registration(world.clinics["A"].id, 1))

    assert result["status"] == "applied"
    assert colleague.wait_for("poke", ARRIVES), "clinic A's device was not poked"
    assert not elsewhere.wait_for("poke", QUIET), "clinic B's device was poked for clinic A"


@pytest.mark.postgres
def test_every_listening_device_of_the_clinic_is_poked(listen, push, world):
    devices = [listen("nurse"), listen("clinician"), listen("registration_clerk")]

    push(_registration(world.clinics["A"].id, 1))

    assert all(device.wait_for("poke", ARRIVES) for device in devices)


@pytest.mark.postgres
def test_a_rejected_mutation_does_not_hold_back_the_poke_for_the_rest_of_its_batch(
        listen, push, world):
    colleague = listen()

    results = push(_registration(world.clinics["A"].id, 1),
                   _registration(world.clinics["A"].id, 2, sex="robot"))

    assert [res["status"] for res in results] == ["applied", "rejected"]
    assert colleague.wait_for("poke", ARRIVES)


@pytest.mark.postgres
def test_a_batch_written_in_bulk_pokes_like_a_single_write(listen, push, world):
    """Larger batches reach the change log by COPY, which the database's poke sees as well."""
    colleague = listen()

    results = push(*[_registration(world.clinics["A"].id, seq) for seq in range(1, 21)])

    assert [res["status"] for res in results] == ["applied"] * 20
    assert colleague.wait_for("poke", ARRIVES)


@pytest.mark.postgres
def test_a_push_that_changes_nothing_pokes_nobody(listen, push, world):
    colleague = listen()

    [result] = push(_registration(world.clinics["A"].id, 1, sex="robot"))

    assert result["status"] == "rejected"
    assert not colleague.wait_for("poke", QUIET)


@pytest.mark.postgres
def test_a_write_made_on_the_server_pokes_too(listen, register, world):
    """Web forms write through apply(), as this does, not through /sync/v1/push."""
    colleague = listen()

    register(world.actor("registration_clerk", "A"))

    assert colleague.wait_for("poke", ARRIVES)


@pytest.mark.postgres
def test_the_listener_stops_when_nobody_listens_and_starts_again_for_the_next(
        hub, listen, push, world):
    first = listen()
    assert hub.running
    first.close()
    assert _eventually(lambda: not hub.running, 10), "the listener outlived its subscribers"

    second = listen()
    push(_registration(world.clinics["A"].id, 1))

    assert hub.running
    assert second.wait_for("poke", ARRIVES)


@pytest.mark.parametrize("app_overrides", [{**FAST_STREAMS, "SYNC_EVENTS_MAX_SECONDS": 0.5}])
def test_a_stream_ends_by_itself_so_the_device_reconnects(listen):
    stream = listen()

    assert stream.next_event(ARRIVES) is None
    assert stream.ended


def test_a_stream_is_never_compressed_so_each_event_leaves_at_once(app, hub, token_for):
    # Browsers ask every request to be compressed; a compressor would keep the events in
    # its buffer, and a device would learn of a write only when the stream ends.
    response = app.test_client().get("/sync/v1/events", buffered=False, headers={
        "Authorization": f"Bearer {token_for('nurse')}", "Accept-Encoding": "gzip, deflate, br, zstd"})
    try:
        assert response.status_code == 200
        assert "Content-Encoding" not in response.headers
        assert response.is_streamed
        first = next(iter(response.response)).decode()
        assert "event: ready" in first
    finally:
        response.close()


@pytest.mark.parametrize("app_overrides", [{**FAST_STREAMS, "SYNC_EVENTS_MAX_SECONDS": 0.5}])
def test_a_stream_that_ends_as_planned_has_the_browser_reconnect_at_once(listen):
    """A write made between two streams waits for the next one's "ready"; a break (the server
    restarting) must not have every browser reconnecting at that pace."""
    stream = listen()

    assert stream.next_event(ARRIVES) is None and stream.ended
    assert stream.retries[0] >= 1000, "a broken stream would have the browser reconnect in a tight loop"
    assert len(stream.retries) > 1 and stream.retries[-1] <= 500, \
        "the browser waits seconds for the next stream after a planned end"


@pytest.mark.parametrize("app_overrides", [{**FAST_STREAMS, "SYNC_EVENTS_STREAMS": 1,
                                            "SYNC_EVENTS_BUSY_RETRY_SECONDS": 20.0}])
def test_a_page_beyond_the_streams_a_process_serves_is_asked_to_come_back_later(
        app, hub, listen, token_for):
    first = listen()
    turned_away = Stream(_test_client_chunks(app.test_client(), token_for("clinician")))

    assert turned_away.next_event(ARRIVES) == "busy"
    assert turned_away.next_event(ARRIVES) is None and turned_away.ended
    # Not in a tight loop, and not all together: the browser waits 10-30 s before it tries again.
    assert 10_000 <= turned_away.retries[0] <= 30_000
    turned_away.close()

    first.close()
    listen("clinician")  # the first page's place is free again: this one is served


@pytest.mark.parametrize("app_overrides", [{**FAST_STREAMS, "SYNC_EVENTS_POLL_SECONDS": 60.0}])
def test_a_push_pokes_the_devices_listening_on_the_same_server_without_waiting_for_a_poll(
        hub, listen, push, world):
    """On SQLite the change log is polled for other processes' writes; this process's own
    commits wake the watcher, so its devices are poked well before the next poll."""
    colleague = listen()

    push(_registration(world.clinics["A"].id, 1))

    assert colleague.wait_for("poke", ARRIVES), "the poke waited for the next poll of the change log"
    colleague.close()
    # The watcher sees that nobody listens only when it wakes; it would sleep out the poll.
    time.sleep(FAST_STREAMS["SYNC_EVENTS_IDLE_SECONDS"] + 0.2)
    hub.wake()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_pokes_resume_after_the_listeners_database_connection_is_cut(
        app, listen, push, world, monkeypatch):
    monkeypatch.setattr("sync_api.events.RETRY_SECONDS", 0.1)
    colleague = listen()

    cut = db.session.execute(sa.text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'")).scalar()
    db.session.commit()
    push(_registration(world.clinics["A"].id, 1))

    assert cut == 1
    assert colleague.wait_for("poke", ARRIVES), "no poke after the listener reconnected"


# Two gunicorn servers on one PostgreSQL ------------------------------------------------------

def _database_url(name: str) -> str:
    return sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _seed(main_url: str, audit_url: str) -> tuple[str, dict[str, str]]:
    """Clinics A and B with a clerk and a nurse each: (clinic A's id, bearer token by username)."""
    app = create_app({**BASE_OVERRIDES, "SQLALCHEMY_DATABASE_URI": main_url,
                      "SQLALCHEMY_BINDS": {"audit": audit_url}})
    with app.app_context():
        org = Organization(id=new_id(), name="Two Servers Health")
        clinics = {key: Clinic(id=new_id(), organization_id=org.id, name=f"Clinic {key}",
                               code=f"S{key}") for key in ("A", "B")}
        db.session.add_all([org, *clinics.values()])
        secrets = {}
        for key, clinic in clinics.items():
            for role in (r.REGISTRATION_CLERK, r.NURSE):
                user = User(id=new_id(), organization_id=org.id, username=f"{role}.{key.lower()}",
                            display_name=f"{role} {key}", password_hash=hashed_password("unused"))
                db.session.add(user)
                db.session.flush()
                db.session.add(Membership(id=new_id(), user_id=user.id, clinic_id=clinic.id,
                                          role=role))
                secrets[user.username] = tokens.issue(user, "two servers test", clinic.id)
        db.session.commit()
        clinic_a = clinics["A"].id
        db.session.remove()
        db.engine.dispose()
        db.engines["audit"].dispose()
    return clinic_a, secrets


@contextmanager
def _gunicorn(env: dict, log_path: Path):
    """A server like the Procfile's (gthread), serving before this yields, gone after."""
    port = gunicorn.free_port()
    with open(log_path, "w") as log_file:
        proc = gunicorn.spawn(env, port, log_file, subprocess.STDOUT, "--worker-class",
                              "gthread", "--threads", "8", "--graceful-timeout", "2")
        try:
            problem = gunicorn.wait_until_serving(proc, port)
            if problem:
                pytest.fail(f"gunicorn on port {port} did not start ({problem}):\n"
                            f"{log_path.read_text()[-4000:]}", pytrace=False)
            yield port
        finally:
            gunicorn.stop(proc)


def _http_chunks(port: int, token: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/sync/v1/events", headers={"Authorization": f"Bearer {token}",
                                                        "Accept": "text/event-stream"})
        response = conn.getresponse()
        assert response.status == 200, response.status
        while line := response.readline():
            yield line.decode()
    finally:
        conn.close()


def _http_push(port: int, token: str, body: dict, timeout: float = 30) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/sync/v1/push", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


@pytest.mark.postgres
def test_a_push_to_one_server_pokes_a_device_listening_on_another(pg_template, tmp_path):
    with pg_databases("events", pg_template) as (main, audit):
        clinic_a, secrets = _seed(_database_url(main), _database_url(audit))
        env = _pg_env(main, audit, SYNC_EVENTS_KEEPALIVE_SECONDS="0.2", SYNC_EVENTS_MAX_SECONDS="60")
        logs = tmp_path / "one.log", tmp_path / "two.log"
        with _gunicorn(env, logs[0]) as one_port, _gunicorn(env, logs[1]) as two_port:
            colleague = Stream(_http_chunks(two_port, secrets["nurse.a"]))
            elsewhere = Stream(_http_chunks(two_port, secrets["nurse.b"]))
            try:
                assert colleague.wait_for("ready", ARRIVES) and elsewhere.wait_for("ready", ARRIVES)

                answer = _http_push(one_port, secrets["registration_clerk.a"],
                                    _push_body(_registration(clinic_a, 1)))

                assert [res["status"] for res in answer["results"]] == ["applied"]
                assert colleague.wait_for("poke", ARRIVES), "the other server did not poke"
                assert not elsewhere.wait_for("poke", QUIET), "clinic B was poked for clinic A"
            finally:
                colleague.close()
                elsewhere.close()


def _pg_env(main: str, audit: str, **settings: str) -> dict:
    return {**os.environ, "APP_ENV": "development", "SECRET_KEY": "s" * 64,
            "DATABASE_URL": _database_url(main), "AUDIT_DATABASE_URL": _database_url(audit),
            **settings}


@pytest.mark.postgres
def test_open_pages_never_take_the_threads_a_push_needs(pg_template, tmp_path):
    """The Procfile's server with one thread for requests and two for event streams: three
    open pages, then a push. Each page holds a stream and a stream holds a thread for its
    minute; a worker serves only SYNC_EVENTS_STREAMS of them and takes a connection more for
    each, so a push still finds its thread."""
    with pg_databases("streams", pg_template) as (main, audit):
        clinic_a, secrets = _seed(_database_url(main), _database_url(audit))
        env = _pg_env(main, audit, WEB_CONCURRENCY="1", GUNICORN_THREADS="1",
                      SYNC_EVENTS_STREAMS="2", SYNC_EVENTS_KEEPALIVE_SECONDS="0.2",
                      SYNC_EVENTS_MAX_SECONDS="60", SYNC_EVENTS_BUSY_RETRY_SECONDS="30")
        port = gunicorn.free_port()
        with open(tmp_path / "server.log", "w") as log_file:
            proc = gunicorn.spawn_procfile(env, port, log_file, subprocess.STDOUT)
            pages = []
            try:
                assert gunicorn.wait_until_serving(proc, port) is None, \
                    (tmp_path / "server.log").read_text()[-4000:]
                for name in ("nurse.a", "registration_clerk.a", "nurse.a"):
                    pages.append(Stream(_http_chunks(port, secrets[name])))
                first_events = [page.next_event(ARRIVES) for page in pages]
                assert sorted(map(str, first_events)) == ["busy", "ready", "ready"]

                answer = _http_push(port, secrets["registration_clerk.a"],
                                    _push_body(_registration(clinic_a, 1)), timeout=ARRIVES)

                assert [res["status"] for res in answer["results"]] == ["applied"]
                listening = [page for page, first in zip(pages, first_events) if first == "ready"]
                assert all(page.wait_for("poke", ARRIVES) for page in listening)
            finally:
                for page in pages:
                    page.close()
                gunicorn.stop(proc)
