"""Announce which clinics a transaction changed, so their devices are told to pull.

On PostgreSQL the announcement is a NOTIFY sent in the writing transaction: the database
delivers it at commit to every app server listening, and never for a rollback. On SQLite
the listeners watch the change log instead (sync_api/events.py): nothing is sent here, but a
commit wakes this process's watcher, so its own devices do not wait for the next poll.
"""
from __future__ import annotations

from flask import current_app, has_app_context
from sqlalchemy import event, text
from sqlalchemy.orm import Session

CHANNEL = "clinic_changes"
_PENDING = "pokes_pending"
# Clinics already notified in the open transaction. PostgreSQL delivers one notification per
# channel and payload per transaction anyway; sending it again is only a round trip per
# mutation of a batch.
_SENT = "pokes_sent"
# SQLite: the transaction changed a clinic's records; the watcher looks when it commits.
_LOCAL = "pokes_local"


def announce(clinic_id: str | None) -> None:
    from app.extensions import db
    if clinic_id:
        db.session.info.setdefault(_PENDING, set()).add(clinic_id)


@event.listens_for(Session, "before_commit")
def _notify(session: Session) -> None:
    # This also runs as each mutation's savepoint is released (apply()), so its NOTIFY is in
    # the transaction before a later mutation of the batch can fail and roll its savepoint
    # back: that rollback fires _forget, which must not cost the earlier ones their poke.
    clinics = session.info.pop(_PENDING, None)
    if not clinics:
        return
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        session.info[_LOCAL] = True
        return
    sent = session.info.setdefault(_SENT, set())
    for clinic_id in sorted(clinics - sent):
        session.execute(text("SELECT pg_notify(:channel, :clinic)"),
                        {"channel": CHANNEL, "clinic": clinic_id})
    sent.update(clinics)


@event.listens_for(Session, "after_commit")
def _wake_watcher(session: Session) -> None:
    # A savepoint's release lands here too, before anything is visible to other connections.
    if session.get_nested_transaction() is not None:
        return
    if not session.info.pop(_LOCAL, None) or not has_app_context():
        return
    hub = current_app.extensions.get("pokes")
    if hub is not None:
        hub.wake()


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction) -> None:
    # However the outermost transaction ends (commit, rollback, close), the next one has
    # sent nothing yet; a savepoint ending keeps the outer transaction's record.
    if transaction.parent is None:
        session.info.pop(_SENT, None)
        session.info.pop(_LOCAL, None)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    # A savepoint's rollback lands here too; forgetting what was sent then costs at most one
    # NOTIFY more, never a lost one.
    session.info.pop(_PENDING, None)
    session.info.pop(_SENT, None)
