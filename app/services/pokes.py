"""Announce which clinics a transaction changed, so their devices are told to pull.

On PostgreSQL the database announces them itself: a trigger on the change log sends a
NOTIFY per clinic in the writing transaction (migration 0008), which is delivered at commit
to every app server listening, and never for a rollback. On SQLite the listeners watch the
change log instead (sync_api/events.py): a commit that wrote to it wakes this process's
watcher, so its own devices do not wait for the next poll.
"""
from __future__ import annotations

from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

CHANNEL = "clinic_changes"  # the trigger's channel, named again in migration 0008
# SQLite: the transaction changed a clinic's records; the watcher looks when it commits.
_LOCAL = "pokes_local"


def announce(clinic_id: str | None) -> None:
    from app.extensions import db
    if clinic_id and db.engine.dialect.name != "postgresql":
        db.session.info[_LOCAL] = True


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
    # written nothing yet; a savepoint ending keeps the outer transaction's record.
    if transaction.parent is None:
        session.info.pop(_LOCAL, None)
