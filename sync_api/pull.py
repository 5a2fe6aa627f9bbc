"""Pull: every change a device may hold, in log order, with nothing ever skipped.

On PostgreSQL a sequence value is taken when a row is written, not when its transaction
commits, so a change with a lower seq can become visible after one with a higher seq. The
log is therefore read in (txid, seq) order and only below the oldest transaction still
running: every transaction below that horizon has finished, so everything it wrote is
visible, and nothing can later appear behind the cursor. SQLite has one writer at a time,
so its seq order is already commit order (all its rows carry txid 0).
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from flask import current_app

from sqlalchemy import and_, bindparam, delete, func, select, text, tuple_, update
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import (ENTITY_MODELS, ChangeLog, EntityHistory, Note, Observation, Patient,
                        SyncSubset)
from app.models.records import RecordMixin, to_json_value
from app.models.sealed import SealedRow, open_record
from app.models.types import utcnow
from app.services.actor import Actor
from sync_api import turns
from sync_api.clients import ClaimedClient, set_generation
from sync_api.cursor import Cursor, seal, unseal
from sync_api.epoch import current_epoch
from sync_api.subset import (
    SUBSET_RECHECK, DeviceView, allowed_categories, scope_key, subset_may_have_changed,
    subset_patient_ids,
)

# Backfill order: parents before the records that point at them.
BACKFILL_ORDER = ("patient", "patient_identifier", "visit", "appointment", "observation",
                  "condition", "note", "note_addendum", "medication_request",
                  "medication_dispense", "consent")
_EAGER = {"patient": selectinload(Patient.identifiers), "note": selectinload(Note.addenda)}
_END_OF_TRANSACTION = 2**62  # a seq above any real one: "all of this txid"
PULL_APPLICATION = "clinic-sync-pull"


@dataclass
class Horizon:
    """How far the log may be read now: below txid `below` (None: no bound), and where a
    cursor may move to when nothing more is there."""
    below: int | None
    end: tuple[int, int]


def horizon(again: bool = False) -> Horizon:
    """Where the log may be read to now (`again`: once more in the same transaction).

    On PostgreSQL: below the oldest transaction still running in this database, other than
    this pull's own (which writes no changes). Transaction ids are shared by the whole
    cluster, so a long statement in another database (a backup, a DROP DATABASE) must
    not hold every device's pull back; only this database's transactions can write the log.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        if again:
            # The activity view is read once per transaction and kept; a retry needs it anew.
            db.session.execute(text("SELECT pg_stat_clear_snapshot()"))
        # Pulls write no changes, so they need not wait for one another: marked (for this
        # transaction: set_config's `true`), they are left out of every pull's horizon (a
        # poke makes a whole clinic pull at once).
        row = db.session.execute(text(
            "SELECT set_config('application_name', :pulling, true) AS marked,"
            " pg_snapshot_xmax(s)::text::bigint AS xmax,"
            " ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x"
            "       WHERE x::text::bigint % 4294967296 IN ("
            "         SELECT backend_xid::text::bigint FROM pg_stat_activity"
            "         WHERE datname = current_database() AND backend_xid IS NOT NULL"
            "         AND application_name IS DISTINCT FROM :pulling)"
            " ) AS running,"
            " pg_current_xact_id_if_assigned()::text::bigint AS own"
            " FROM pg_current_snapshot() AS s"), {"pulling": PULL_APPLICATION}).one()
        below = min([x for x in row.running if x != row.own] + [row.xmax])
        return Horizon(below=below, end=(below - 1, _END_OF_TRANSACTION))
    last = db.session.execute(select(func.max(ChangeLog.seq))).scalar() or 0
    return Horizon(below=None, end=(0, last))


def pull(actor: Actor, client: ClaimedClient, cursor_text: str | None, limit: int,
         seen: Horizon) -> dict:
    now = utcnow()
    view = DeviceView(allowed_categories(actor.roles), now)
    key = f"{current_app.config['SECRET_KEY']}|{client.client_id}".encode()
    cursor = unseal(cursor_text, key)
    reset = False
    if not _still_valid(cursor, actor, client, seen):
        reset = bool(cursor_text)
        cursor = _fresh_start(actor, client, seen)
    changes: list[dict] = []
    if cursor.backfill is None:
        checked = cursor.subset_checked
        minute = int(now.timestamp()) // 60
        if (checked is None or cursor.gen != client.generation
                or minute - checked[2] >= SUBSET_RECHECK.total_seconds() // 60
                or subset_may_have_changed(actor, client.client_id, checked[:2])):
            changes += _refresh_subset(actor, client, cursor, now)
            checked = (0, 0, minute)
        # Reading the subset again at every pull read every patient of the clinic to find,
        # nearly always, that none had come or gone.
        cursor.subset_checked = (*seen.end, checked[2])
    if cursor.backfill is not None:
        changes += _backfill(client, cursor, max(limit - len(changes), 1), view)
    more_in_log = cursor.backfill is None
    if cursor.backfill is None and len(changes) < limit:
        found, more_in_log = _log(client, cursor, limit - len(changes), view, seen)
        changes += found
    return {"cursor": seal(cursor, key), "has_more": cursor.backfill is not None or more_in_log,
            "reset": reset, "last_seq": client.last_seq, "changes": changes,
            "server_time": to_json_value(now)}


def _still_valid(cursor: Cursor | None, actor: Actor, client: ClaimedClient, seen: Horizon) -> bool:
    if cursor is None or cursor.epoch != current_epoch() or cursor.scope != scope_key(actor):
        return False
    if cursor.gen > client.generation:  # generations this server never issued: a restore
        return False
    # A cursor beyond the end of the log comes from a database that has since been restored.
    return (cursor.txid, min(cursor.seq, _END_OF_TRANSACTION)) <= seen.end


def _fresh_start(actor: Actor, client: ClaimedClient, seen: Horizon) -> Cursor:
    """Forget what the device held; it gets its whole subset again, then the log from now.
    The subset is refreshed next (a fresh cursor has no check and no backfill), and that
    writes the device's generation, once."""
    db.session.execute(delete(SyncSubset).where(SyncSubset.client_id == client.client_id))
    return Cursor(epoch=current_epoch(), scope=scope_key(actor), txid=seen.end[0],
                  seq=seen.end[1], gen=0)


def _refresh_subset(actor: Actor, client: ClaimedClient, cursor: Cursor, now) -> list[dict]:
    """Patients that entered the subset start a backfill; those that left are evicted.

    Generations the device never acknowledged (its answer was lost) are undone first, so
    a repeated pull computes the same difference again.
    """
    held_by = SyncSubset.client_id == client.client_id
    gen = cursor.gen
    rows = db.session.execute(select(SyncSubset.patient_id, SyncSubset.added_gen,
                                     SyncSubset.removed_gen).where(held_by)).all()
    # Usually every generation was acknowledged and nothing needs undoing: the rows are
    # only read, and the writes below run when one was not.
    if any(r.added_gen > gen or r.removed_gen is not None for r in rows):
        db.session.execute(delete(SyncSubset).where(held_by, SyncSubset.added_gen > gen))
        db.session.execute(update(SyncSubset).where(held_by, SyncSubset.removed_gen > gen)
                           .values(removed_gen=None))
        db.session.execute(delete(SyncSubset).where(held_by, SyncSubset.removed_gen <= gen))
    held = {r.patient_id for r in rows if r.added_gen <= gen
            and (r.removed_gen is None or r.removed_gen > gen)}
    wanted = subset_patient_ids(actor, client.client_id, now)
    entered, left = wanted - held, held - wanted
    if not entered and not left:
        set_generation(client, gen)
        return []
    gen += 1
    if entered:
        db.session.execute(SyncSubset.__table__.insert(), [
            {"client_id": client.client_id, "patient_id": pid, "added_gen": gen}
            for pid in sorted(entered)])
        cursor.backfill = (0, "", "")
    if left:
        db.session.execute(update(SyncSubset).where(
            held_by, SyncSubset.removed_gen.is_(None), SyncSubset.patient_id.in_(left))
            .values(removed_gen=gen))
    set_generation(client, gen)
    cursor.gen = gen
    return [{"op": "evict", "entity": "patient", "id": pid} for pid in sorted(left)]


# Records built from more than their RECORD_FIELDS: the extra columns, and how to_record()
# makes them into one more field.
_DERIVED = {Observation: ("value", (Observation.value_number, Observation.value_text),
                          Observation.record_value)}


def _plain_columns(model) -> tuple | None:
    """The columns a record is built from, when it is nothing but columns as JSON values:
    such rows are read as column tuples, without building ORM objects. Models with sealed
    fields or related rows in their records keep going through to_record()."""
    fields = model.RECORD_FIELDS
    if (issubclass(model, SealedRow) or model.RECORD_RELATIONSHIPS
            or (model.to_record is not RecordMixin.to_record and model not in _DERIVED)
            or not set(fields) <= set(model.__mapper__.column_attrs.keys())):
        return None
    extra = _DERIVED[model][1] if model in _DERIVED else ()
    return (*(getattr(model, name) for name in fields), *extra)


def _converted(columns) -> frozenset[str]:
    """Which of the columns hold values to_json_value() changes (times, dates, decimals):
    the others are copied as they come."""
    out = set()
    for column in columns:
        try:
            plain = column.type.python_type in (str, int, float, bool)
        except NotImplementedError:
            plain = False
        if not plain:
            out.add(column.key)
    return frozenset(out)


_PLAIN = {entity: _plain_columns(ENTITY_MODELS[entity]) for entity in BACKFILL_ORDER}
_CONVERTED = {entity: _converted(columns[:len(ENTITY_MODELS[entity].RECORD_FIELDS)])
              for entity, columns in _PLAIN.items() if columns}


def _backfill(client: ClaimedClient, cursor: Cursor, limit: int, view: DeviceView) -> list[dict]:
    """The current records of the patients that entered at this generation, page by page.

    Each entity's records go out in (patient_id, id) order, walking the entered patients in
    order: a page reads its rows from the cursor on through the (patient_id, id) index rather
    than sorting every remaining record of the subset again.
    """
    index, after_owner, after_id = cursor.backfill
    out: list[dict] = []
    room = limit
    while index < len(BACKFILL_ORDER) and room > 0:
        entity = BACKFILL_ORDER[index]
        model = ENTITY_MODELS[entity]
        # Ordered by the subset's patient_id (equal to the owner): the planner then walks the
        # subset's key in order and sorts only within each patient, if at all.
        if entity == "patient":
            owner, order, position = model.id, (SyncSubset.patient_id,), model.id > after_id
        else:
            owner, order = model.patient_id, (SyncSubset.patient_id, model.id)
            position = tuple_(model.patient_id, model.id) > tuple_(after_owner, after_id)
        entered = and_(SyncSubset.client_id == client.client_id,
                       SyncSubset.patient_id == owner, SyncSubset.patient_id >= after_owner,
                       SyncSubset.added_gen == cursor.gen, SyncSubset.removed_gen.is_(None))
        columns = _PLAIN[entity]
        query = select(*columns) if columns else select(model)
        query = query.join(SyncSubset, entered).where(position).order_by(*order).limit(room)
        if columns:
            fields = model.RECORD_FIELDS
            rows = db.session.execute(query).all()
            converted = _CONVERTED[entity]
            records = []
            for row in rows:
                record = dict(zip(fields, row))
                for name in converted:
                    record[name] = to_json_value(record[name])
                records.append(record)
            if model in _DERIVED:
                name, extra, derive = _DERIVED[model]
                for record, row in zip(records, rows):
                    record[name] = derive(*row[len(fields):])
        else:
            if entity in _EAGER:
                query = query.options(_EAGER[entity])
            rows = db.session.execute(query).scalars().all()
            records = [row.to_record() for row in rows]
        for record in records:
            shown = view.of(entity, record)
            if shown is not None:
                out.append({"op": "put", "entity": entity, "id": record["id"],
                            "version": record["version"], "record": shown})
        room -= len(rows)
        if room > 0:  # this entity is done
            index, after_owner, after_id = index + 1, "", ""
        else:
            last = records[-1]
            after_owner = last["id"] if entity == "patient" else last["patient_id"]
            after_id = last["id"]
    cursor.backfill = (index, after_owner, after_id) if index < len(BACKFILL_ORDER) else None
    return out


# Built once per database, its values as parameters: building a statement and its cache key
# again at every request cost a tenth of a busy hour's pull.
@functools.cache
def _log_query(dialect_name: str):
    held = select(SyncSubset.patient_id).where(SyncSubset.client_id == bindparam("client_id"),
                                               SyncSubset.removed_gen.is_(None))
    # The range after the cursor drives, in log order, and stops when the page is full.
    # (On SQLite a row-value range made it read every change ever logged for the device's
    # patients and sort them, so a poll cost more the more a device held.)
    after = ChangeLog.after(bindparam("txid"), bindparam("seq"), dialect_name)
    return (select(ChangeLog.txid, ChangeLog.seq, ChangeLog.entity, ChangeLog.entity_id,
                   ChangeLog.version, EntityHistory.record)
            .join(EntityHistory, and_(EntityHistory.entity == ChangeLog.entity,
                                      EntityHistory.entity_id == ChangeLog.entity_id,
                                      EntityHistory.version == ChangeLog.version))
            .where(after, ChangeLog.patient_id.in_(held))
            .order_by(ChangeLog.txid, ChangeLog.seq).limit(bindparam("room")))


def _log(client: ClaimedClient, cursor: Cursor, room: int, view: DeviceView,
         seen: Horizon) -> tuple[list[dict], bool]:
    """The next changes in log order for the patients the device holds.

    A change committed by a transaction younger than one still running is held back (it
    sits above the horizon). When this device has such a change waiting, the pull waits a
    moment for the older transaction to finish, so a device poked about a write gets it
    in this pull rather than at its next timer; unless pushes are waiting for a turn.
    """
    query = _log_query(db.session.get_bind().dialect.name)
    parameters = {"client_id": client.client_id, "txid": cursor.txid, "seq": cursor.seq,
                  "room": room}
    give_up_at = time.monotonic() + current_app.config["SYNC_PULL_SETTLE_SECONDS"]
    while True:
        rows = db.session.execute(query, parameters).all()
        ready = rows if seen.below is None else [r for r in rows if r.txid < seen.below]
        held_back = len(ready) < len(rows)
        # Not while pushes wait for the turn this pull holds: the device gets the change at
        # its next pull, soon at an hour that busy, and a write waiting would be at risk.
        if not held_back or time.monotonic() >= give_up_at or turns.pushes_waiting():
            break
        time.sleep(0.02)
        seen = horizon(again=True)
    full = len(ready) == room
    # Rows are in (txid, seq) order, so everything below the horizon came before the first
    # row held back: the cursor may move to the horizon unless the page filled up first.
    cursor.txid, cursor.seq = (ready[-1].txid, ready[-1].seq) if full else seen.end
    latest: dict[tuple[str, str], dict] = {}
    for row in ready:
        record = view.of(row.entity, open_record(row.entity, row.record))
        if record is None:
            continue
        key = (row.entity, row.entity_id)
        # A later version in the same page replaces the earlier one where it stood, so a
        # parent still comes before the records that point at it.
        latest[key] = {"op": "put", "entity": row.entity, "id": row.entity_id,
                       "version": row.version, "record": record}
    return list(latest.values()), full
