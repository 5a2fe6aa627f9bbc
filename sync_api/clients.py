"""The server's record of each device: claimed by one user, locked while its order is checked."""
from __future__ import annotations

from flask import request
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.models import SyncClient
from app.models.types import utcnow
from app.services.actor import Actor
from sync_api.errors import SyncError
from sync_api.wire import TELEMETRY_FIELDS


def claim(actor: Actor, client_id: str, telemetry: dict | None = None) -> SyncClient:
    """This user's client row, created on first contact and locked for this transaction.

    The lock serializes two pushes from one client (two tabs, a retry racing the original),
    so each seq is checked against the last_seq the other committed.
    """
    now = utcnow()
    insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.session.execute(insert(SyncClient).values(
        client_id=client_id, user_id=actor.user_id, clinic_id=actor.clinic_id, last_seq=0,
        generation=0, created_at=now, last_seen_at=now,
        user_agent=(request.user_agent.string or "")[:300] or None,
    ).on_conflict_do_nothing(index_elements=["client_id"]))
    client = db.session.execute(select(SyncClient).where(SyncClient.client_id == client_id)
                                .with_for_update()
                                .execution_options(populate_existing=True)).scalar_one()
    if client.user_id != actor.user_id:
        raise SyncError(403, "client_mismatch", "This client id belongs to another user. Each "
                        "person syncs with their own client id; nothing was applied.")
    client.clinic_id = actor.clinic_id
    client.last_seen_at = now
    if telemetry is not None:
        record_telemetry(client, telemetry)
    return client


def record_telemetry(client: SyncClient, telemetry: dict) -> None:
    client.telemetry = {k: telemetry.get(k) for k in TELEMETRY_FIELDS if k in telemetry}
    client.telemetry_at = utcnow()
