"""The server's record of each device: claimed by one user, locked while its order is checked."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from flask import request
from sqlalchemy import bindparam, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.models import SyncClient
from app.models.types import utcnow
from app.services.actor import Actor
from sync_api.errors import SyncError
from sync_api.wire import TELEMETRY_FIELDS


@dataclass
class ClaimedClient:
    """The device's row as a sync request needs it, locked for the request's transaction."""
    client_id: str
    user_id: str
    last_seq: int
    generation: int


def claim(actor: Actor, client_id: str, telemetry: dict | None = None,
          pulling: bool = False) -> ClaimedClient:
    """This user's client row, created on first contact and locked for this transaction.

    The lock serializes two pushes from one client (two tabs, a retry racing the original),
    so each seq is checked against the last_seq the other committed. One upsert creates or
    locks the row and records this contact: every sync request passes here.
    """
    now = utcnow()
    contact = {"clinic_id": actor.clinic_id, "last_seen_at": now}
    if pulling:
        contact["last_pull_at"] = now
    if telemetry is not None:
        contact.update(telemetry=_kept(telemetry), telemetry_at=now)
    values = {"client_id": client_id, "user_id": actor.user_id, "last_seq": 0, "generation": 0,
              "created_at": now, "user_agent": (request.user_agent.string or "")[:300] or None,
              **contact}
    statement = _upsert(db.session.get_bind().dialect.name, tuple(contact))
    client = ClaimedClient(*db.session.execute(statement, {f"new_{k}": v
                                                           for k, v in values.items()}).one())
    if client.user_id != actor.user_id:
        # The contact written above goes with the rollback that answers this error.
        raise SyncError(403, "client_mismatch", "This client id belongs to another user. Each "
                        "person syncs with their own client id; nothing was applied.")
    return client


@functools.lru_cache(maxsize=16)
def _upsert(dialect_name: str, contact: tuple[str, ...]):
    """The upsert for one set of contact columns, built once: every sync request runs it."""
    insert = pg_insert if dialect_name == "postgresql" else sqlite_insert
    table = SyncClient.__table__

    def new(name: str):
        return bindparam(f"new_{name}", type_=table.c[name].type)
    inserted = ("client_id", "user_id", "last_seq", "generation", "created_at", "user_agent",
                *contact)
    # A Core upsert returning the few columns a request reads: loaded as an ORM object (every
    # column, the telemetry's JSON parsed back), it was a fifth of a push's CPU at peak.
    return (insert(table).values({name: new(name) for name in inserted})
            .on_conflict_do_update(index_elements=["client_id"],
                                   set_={name: new(name) for name in contact})
            .returning(table.c.client_id, table.c.user_id, table.c.last_seq,
                       table.c.generation))


def set_generation(client: ClaimedClient, generation: int) -> None:
    """The subset generation the device was last given, kept on its row."""
    if generation != client.generation:
        db.session.execute(update(SyncClient.__table__)
                           .where(SyncClient.client_id == client.client_id)
                           .values(generation=generation))
        client.generation = generation


def _kept(telemetry: dict) -> dict:
    return {k: telemetry.get(k) for k in TELEMETRY_FIELDS if k in telemetry}
