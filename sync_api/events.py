"""Live pokes: content-free "pull now" hints to the devices of a clinic (Server-Sent Events).

Each app process runs one listener thread while anyone is subscribed. On PostgreSQL it
LISTENs for the NOTIFY that writing transactions send at commit (app/services/pokes.py), so a
write on any app server reaches devices connected to every other one. On SQLite it watches the
change log, which also works across the processes of one machine: a commit in the same
process wakes the watcher at once, and the poll catches the other processes' commits. A
stream ends after a minute or so and the browser reconnects: that bounds how long a thread is
held and re-checks the session. The listener ends after SYNC_EVENTS_IDLE_SECONDS without subscribers, so a
process nobody streams from holds no database connection, and the next subscriber starts it.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time

from flask import Flask, Response, current_app
from sqlalchemy import select

from app import open_streams
from app.database import read_only_intent
from app.models import ChangeLog
from app.services.pokes import CHANNEL

log = logging.getLogger("clinic.sync.events")

# A listener that cannot reach the database must not hold a stream back for long: the device
# pulls on "ready" and keeps polling, so pokes are a speed-up, never the only way to learn.
READY_WAIT_SECONDS = 5.0
RETRY_SECONDS = 2.0
# How long the browser waits before it reconnects. A stream that ends as planned asks for a
# quick one, since a change made in the gap waits for the next stream's "ready"; every stream
# starts with the slower pace, which then holds when a stream breaks (the server restarting).
RECONNECT_MS = 2000
PLANNED_RECONNECT_MS = 300
# Without these a silently dropped connection (a NAT or a failover) would stop pokes for hours.
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                 "keepalives_count": 3, "connect_timeout": 10}


class _Listener:
    """One run of the listener thread, from a first subscriber to a stretch without any."""

    def __init__(self):
        self.ready = threading.Event()


class PokeHub:
    def __init__(self, app: Flask):
        self._app = app
        self._subscribers: dict[str, set[queue.Queue]] = {}
        self._lock = threading.Lock()
        self._listener: _Listener | None = None
        self._idle_since = time.monotonic()
        self._wake = threading.Event()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._listener is not None

    def subscribe(self, clinic_id: str) -> queue.Queue | None:
        """An inbox for the clinic's pokes; None while this process holds as many streams as
        it may (SYNC_EVENTS_STREAMS), so that open pages never take every request thread."""
        inbox: queue.Queue = queue.Queue(maxsize=1)  # a full inbox already says "pull now"
        with self._lock:
            held = sum(map(len, self._subscribers.values()))
            if held >= self._app.config["SYNC_EVENTS_STREAMS"]:
                return None
            listener = self._listener or self._start()
            self._subscribers.setdefault(clinic_id, set()).add(inbox)
            open_streams.opened()
        # The caller then says "ready", which promises that later changes arrive as pokes.
        listener.ready.wait(READY_WAIT_SECONDS)
        return inbox

    def unsubscribe(self, clinic_id: str, inbox: queue.Queue) -> None:
        with self._lock:
            inboxes = self._subscribers.get(clinic_id, set())
            if inbox in inboxes:
                open_streams.closed()
            inboxes.discard(inbox)
            if not inboxes:
                self._subscribers.pop(clinic_id, None)
            if not self._subscribers:
                self._idle_since = time.monotonic()

    def publish(self, clinic_id: str) -> None:
        with self._lock:
            inboxes = list(self._subscribers.get(clinic_id, ()))
        for inbox in inboxes:
            try:
                inbox.put_nowait(True)
            except queue.Full:
                pass

    def wake(self) -> None:
        """A commit in this process changed a clinic's records: look at the change log now."""
        self._wake.set()

    def _publish_all(self) -> None:
        with self._lock:
            clinics = list(self._subscribers)
        for clinic_id in clinics:
            self.publish(clinic_id)

    def _start(self) -> _Listener:
        """Called with the lock held."""
        listener = self._listener = _Listener()
        threading.Thread(target=self._run, args=(listener,), name="poke-listener",
                         daemon=True).start()
        return listener

    def _keep_going(self, listener: _Listener) -> bool:
        """False once nobody has subscribed for a while; the thread then ends."""
        idle = self._app.config["SYNC_EVENTS_IDLE_SECONDS"]
        with self._lock:
            if self._listener is not listener:
                return False  # retired already; a newer listener may be serving
            if self._subscribers or time.monotonic() - self._idle_since < idle:
                return True
            # Decided under the lock, so a subscriber arriving now starts a new listener.
            self._listener = None
            return False

    def _tick(self) -> float:
        """How long the listener may wait before it checks whether anyone still listens."""
        return max(0.05, min(1.0, self._app.config["SYNC_EVENTS_IDLE_SECONDS"]))

    def _now_listening(self, listener: _Listener, recovered: bool) -> None:
        listener.ready.set()
        if recovered:
            # Changes made while the connection was lost were announced to nobody.
            self._publish_all()

    def _run(self, listener: _Listener) -> None:
        with self._app.app_context():
            from app.extensions import db
            engine = db.engine
        listen = self._listen_postgres if engine.dialect.name == "postgresql" else self._watch_log
        recovered = False
        while self._keep_going(listener):
            try:
                listen(engine, listener, recovered)
            except Exception:  # a lost connection must not end live updates for good
                listener.ready.clear()
                log.exception("poke listener failed; retrying in %s s", RETRY_SECONDS)
                recovered = True
                time.sleep(RETRY_SECONDS)

    def _listen_postgres(self, engine, listener: _Listener, recovered: bool) -> None:
        import psycopg
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True, **PG_KEEPALIVES) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self._now_listening(listener, recovered)
            while self._keep_going(listener):
                for note in conn.notifies(timeout=self._tick()):
                    self.publish(note.payload)

    def _watch_log(self, engine, listener: _Listener, recovered: bool) -> None:
        interval = self._app.config["SYNC_EVENTS_POLL_SECONDS"]
        with read_only_intent():  # a plain BEGIN: the watcher must never wait for the write lock
            last = _latest_seq(engine)
            self._now_listening(listener, recovered)
            while self._keep_going(listener):
                self._wake.wait(interval)
                # Cleared before the query: a commit during it wakes the next round at once.
                self._wake.clear()
                last = self._publish_since(engine, last)

    def _publish_since(self, engine, last: int) -> int:
        """Poke the clinics of changes after seq `last`; the newest seq seen."""
        with engine.connect() as conn:
            rows = conn.execute(select(ChangeLog.seq, ChangeLog.clinic_id)
                                .where(ChangeLog.seq > last)).all()
            conn.rollback()
        for clinic_id in {row.clinic_id for row in rows if row.clinic_id}:
            self.publish(clinic_id)
        return max((row.seq for row in rows), default=last)


def _latest_seq(engine) -> int:
    with engine.connect() as conn:
        last = conn.execute(select(ChangeLog.seq).order_by(ChangeLog.seq.desc()).limit(1)).scalar()
        conn.rollback()
    return last or 0


def _busy(retry_seconds: float) -> str:
    """A stream refused for now: it ends at once and the browser comes back later. A 503
    would end an EventSource for good; an answered stream that ends is reopened after
    `retry`. The delay is spread so that refused pages do not all return together; until
    then the device learns of its clinic's writes from its regular sync."""
    log.info("event stream refused: this process holds its SYNC_EVENTS_STREAMS")
    wait_ms = round(retry_seconds * 1000
                    * random.uniform(0.5, 1.5))  # nosec B311: jitter, not a secret
    return f"retry: {wait_ms}\n\nevent: busy\ndata: {{}}\n\n"


def init_app(app: Flask) -> None:
    app.extensions["pokes"] = PokeHub(app)


def stream(clinic_id: str) -> Response:
    hub: PokeHub = current_app.extensions["pokes"]
    config = current_app.config
    lifetime, keepalive = config["SYNC_EVENTS_MAX_SECONDS"], config["SYNC_EVENTS_KEEPALIVE_SECONDS"]

    def events():
        # Subscribed before "ready" is sent, and "ready" also means "pull now": a change
        # made while the device was not listening is fetched by that pull, and any change
        # after it arrives as a poke.
        inbox = hub.subscribe(clinic_id)
        if inbox is None:
            yield _busy(config["SYNC_EVENTS_BUSY_RETRY_SECONDS"])
            return
        try:
            yield f"retry: {RECONNECT_MS}\n\nevent: ready\ndata: {{}}\n\n"
            deadline = time.monotonic() + lifetime
            while (left := deadline - time.monotonic()) > 0:
                try:
                    inbox.get(timeout=min(keepalive, left))
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                yield "event: poke\ndata: {}\n\n"
            yield f"retry: {PLANNED_RECONNECT_MS}\n\n"
        finally:
            hub.unsubscribe(clinic_id, inbox)

    return Response(events(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
