"""The server's record of each device: claimed by one user, locked while its order is checked."""
from __future__ import annotations

from flask import request
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.models import SyncClient
from app.models.types import utcnow
from app.services.actor import Actor
from sync_api.errors import SyncError
from sync_api.wire import TELEMETRY_FIELDS


def claim(actor: Actor, client_id: str, telemetry: dict | None = None,
          pulling: bool = False) -> SyncClient:
    """This user's client row, created on first contact and locked for this transaction.

    The lock serializes two pushes from one client (two tabs, a retry racing the original),
    so each seq is checked against the last_seq the other committed. One upsert creates or
    locks the row and records this contact: every sync request passes here.
    """
    now = utcnow()
    insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    contact = {"clinic_id": actor.clinic_id, "last_seen_at": now}
    if pulling:
        contact["last_pull_at"] = now
    if telemetry is not None:
        contact.update(telemetry=_kept(telemetry), telemetry_at=now)
    statement = insert(SyncClient).values(
        client_id=client_id, user_id=actor.user_id, last_seq=0, generation=0, created_at=now,
        user_agent=(request.user_agent.string or "")[:300] or None, **contact,
    ).on_conflict_do_update(index_elements=["client_id"], set_=contact).returning(SyncClient)
    client = db.session.scalars(statement,
                                execution_options={"populate_existing": True}).one()
    if client.user_id != actor.user_id:
        # The contact written above goes with the rollback that answers this error.
        raise SyncError(403, "client_mismatch", "This client id belongs to another user. Each "
                        "person syncs with their own client id; nothing was applied.")
    return client


def _kept(telemetry: dict) -> dict:
    return {k: telemetry.get(k) for k in TELEMETRY_FIELDS if k in telemetry}
