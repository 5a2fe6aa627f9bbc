"""Live pokes: content-free "pull now" hints to the devices of a clinic (Server-Sent Events).

Each app process runs one listener thread. On PostgreSQL it LISTENs for the NOTIFY that
writing transactions send at commit (app/services/pokes.py), so a write on any app server
reaches devices connected to every other one. On SQLite it watches the change log, which
also works across the processes of one machine. A stream ends after a minute or so and the
browser reconnects: that bounds how long a thread is held and re-checks the session.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

from flask import Flask, Response, current_app
from sqlalchemy import select

from app.database import read_only_intent
from app.models import ChangeLog
from app.services.pokes import CHANNEL

log = logging.getLogger("clinic.sync.events")


class PokeHub:
    def __init__(self, app: Flask):
        self._app = app
        self._subscribers: dict[str, set[queue.Queue]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()

    def subscribe(self, clinic_id: str) -> queue.Queue:
        self._start()
        inbox: queue.Queue = queue.Queue(maxsize=1)  # a full inbox already says "pull now"
        with self._lock:
            self._subscribers.setdefault(clinic_id, set()).add(inbox)
        return inbox

    def unsubscribe(self, clinic_id: str, inbox: queue.Queue) -> None:
        with self._lock:
            self._subscribers.get(clinic_id, set()).discard(inbox)

    def publish(self, clinic_id: str) -> None:
        with self._lock:
            inboxes = list(self._subscribers.get(clinic_id, ()))
        for inbox in inboxes:
            try:
                inbox.put_nowait(True)
            except queue.Full:
                pass

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="poke-listener", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._app.app_context():
            from app.extensions import db
            engine = db.engine
        listen = self._listen_postgres if engine.dialect.name == "postgresql" else self._watch_log
        while True:
            try:
                listen(engine)
            except Exception:  # a lost connection must not end live updates for good
                self.listening.clear()
                log.exception("poke listener failed; retrying in 2 s")
                time.sleep(2)

    def _listen_postgres(self, engine) -> None:
        import psycopg
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            while True:
                for note in conn.notifies(timeout=5.0):
                    self.publish(note.payload)

    def _watch_log(self, engine) -> None:
        interval = self._app.config["SYNC_EVENTS_POLL_SECONDS"]
        with read_only_intent():
            with engine.connect() as conn:
                last = conn.execute(select(ChangeLog.seq).order_by(ChangeLog.seq.desc())
                                    .limit(1)).scalar() or 0
                conn.rollback()
            self.listening.set()
            while True:
                time.sleep(interval)
                with engine.connect() as conn:
                    rows = conn.execute(select(ChangeLog.seq, ChangeLog.clinic_id)
                                        .where(ChangeLog.seq > last)).all()
                    conn.rollback()
                if rows:
                    last = max(row.seq for row in rows)
                    for clinic_id in {row.clinic_id for row in rows if row.clinic_id}:
                        self.publish(clinic_id)


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
        try:
            yield "retry: 2000\n\nevent: ready\ndata: {}\n\n"
            deadline = time.monotonic() + lifetime
            while (left := deadline - time.monotonic()) > 0:
                try:
                    inbox.get(timeout=min(keepalive, left))
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                yield "event: poke\ndata: {}\n\n"
        finally:
            hub.unsubscribe(clinic_id, inbox)

    return Response(events(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
