"""The server's record of each device: claimed by one user, locked while its order is checked."""
from __future__ import annotations

import functools

from flask import request
from sqlalchemy import bindparam, select
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
    contact = {"clinic_id": actor.clinic_id, "last_seen_at": now}
    if pulling:
        contact["last_pull_at"] = now
    if telemetry is not None:
        contact.update(telemetry=_kept(telemetry), telemetry_at=now)
    values = {"client_id": client_id, "user_id": actor.user_id, "last_seq": 0, "generation": 0,
              "created_at": now, "user_agent": (request.user_agent.string or "")[:300] or None,
              **contact}
    statement = _upsert(db.session.get_bind().dialect.name, tuple(contact))
    client = db.session.scalars(statement, {f"new_{k}": v for k, v in values.items()},
                                execution_options={"populate_existing": True}).one()
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
    # A Core upsert whose returned row the ORM loads as the client: written against the
    # mapped class instead, it went through the ORM's bulk INSERT machinery, which cost more
    # than the statement (about 10% of a small push's CPU).
    upsert = (insert(table).values({name: new(name) for name in inserted})
              .on_conflict_do_update(index_elements=["client_id"],
                                     set_={name: new(name) for name in contact})
              .returning(*table.c))
    return select(SyncClient).from_statement(upsert)


def _kept(telemetry: dict) -> dict:
    return {k: telemetry.get(k) for k in TELEMETRY_FIELDS if k in telemetry}
