"""Append to and verify the hash-chained audit log (DESIGN.md §7).

Events are written in their own transaction on the audit database, before the
access they describe is answered; if that write fails the caller must deny.

Signed checkpoints pin the chain: each names a row and its hash, signed with an Ed25519
key the database does not hold. Anyone able to write the table can recompute every hash
after an edit, but cannot sign a new checkpoint, so `verify` then finds the rewritten
stretch. One is written with the append that crosses every AUDIT_CHECKPOINT_EVERY events,
and by `flask audit checkpoint` (run it from cron: rows after the newest checkpoint can be
cut off the end unseen).
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from flask import current_app
from sqlalchemy import func, insert, select, text

from app.crypto.audit_signing import CheckpointSigner, load_private_key, load_public_keys
from app.crypto.configured import from_config
from app.extensions import db
from app.models import AuditCheckpoint, AuditEvent
from app.models.records import to_json_value
from app.models.types import utcnow
from app.services.bulk_rows import insert_rows

GENESIS_HASH = "0" * 64
CHAINED_FIELDS = ("id", "at", "user_id", "username", "role", "clinic_id", "patient_id", "action",
                  "outcome", "device", "break_glass_id", "request_id", "detail")
CHECKPOINT_DOMAIN = "clinic-record audit checkpoint v1"  # a signature for nothing else


class AuditUnavailable(RuntimeError):
    """The audit log could not be written; the access it would record must be denied."""


@dataclass
class AuditEntry:
    action: str
    outcome: str = "success"
    user_id: str | None = None
    username: str | None = None
    role: str | None = None
    clinic_id: str | None = None
    patient_id: str | None = None
    device: str | None = None
    break_glass_id: str | None = None
    request_id: str | None = None
    detail: dict | None = None


def chain_hash(prev_hash: str, row: dict) -> str:
    body = {name: to_json_value(row.get(name)) for name in CHAINED_FIELDS}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def _engine():
    return db.engines["audit"]


def signer() -> CheckpointSigner:
    return from_config("audit_signer", ("AUDIT_SIGNING_KEY", "AUDIT_VERIFY_KEYS"),
                       lambda signing, verifying: CheckpointSigner(
                           load_private_key(signing), load_public_keys(verifying)))


_LAST_EVENT = select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
# Takes the chain's lock, then reads the newest row with a snapshot from after the lock
# (migration 0008), in one round trip.
_PG_LOCKED_LAST_EVENT = text("SELECT id, hash FROM audit_chain_head()")


def _take_turn_and_last_event(conn):
    """The newest row, once this transaction holds the chain (on SQLite, the transaction's
    BEGIN IMMEDIATE already holds the whole database)."""
    if conn.dialect.name == "postgresql":
        return conn.execute(_PG_LOCKED_LAST_EVENT).first()
    return conn.execute(_LAST_EVENT).first()


class _Turn:
    """One caller's entries, waiting to be written."""
    __slots__ = ("entries", "done", "error")

    def __init__(self, entries: list[AuditEntry]):
        self.entries, self.done, self.error = entries, False, None


class _Queue:
    """The callers of one process waiting to append to one audit database."""

    def __init__(self):
        self.lock = threading.Lock()  # guards `waiting`
        self.writing = threading.Lock()  # held by the caller writing a batch
        self.waiting: list[_Turn] = []


_QUEUES: WeakKeyDictionary = WeakKeyDictionary()  # engine -> _Queue
_QUEUES_LOCK = threading.Lock()


def _queue_for(engine) -> _Queue:
    with _QUEUES_LOCK:
        queue = _QUEUES.get(engine)
        if queue is None:
            queue = _QUEUES[engine] = _Queue()
        return queue


def append(entries: list[AuditEntry]) -> None:
    """Write the entries to the chain before returning, or raise AuditUnavailable.

    Every append takes turns on the one chain, and each turn costs a lock and a durable
    commit. So callers arriving while a batch is being written wait, and the next of them
    writes all the waiting entries in one turn (a group commit): at a clinic's busy hour,
    a whole thread pool's reads and writes are recorded in one transaction, not one each.
    Nobody returns before their own entries are committed.
    """
    if not entries:
        return
    try:
        engine = _engine()
        queue = _queue_for(engine)
    except Exception as exc:  # any failure at all means the access is not recorded
        raise AuditUnavailable(str(exc)) from exc
    turn = _Turn(entries)
    with queue.lock:
        queue.waiting.append(turn)
    with queue.writing:
        if not turn.done:
            with queue.lock:
                batch, queue.waiting = queue.waiting, []
            _write_batch(engine, batch)
    if turn.error is not None:
        raise AuditUnavailable(str(turn.error)) from turn.error


def _write_batch(engine, batch: list[_Turn]) -> None:
    """Each turn's error, if any, is kept on it and raised by its own caller."""
    try:
        _write(engine, [entry for turn in batch for entry in turn.entries])
    except Exception as exc:  # noqa: BLE001
        if len(batch) == 1:
            batch[0].error = exc
        else:
            # One caller's bad entry must not deny the others: each is tried on its own.
            for turn in batch:
                try:
                    _write(engine, turn.entries)
                except Exception as own:  # noqa: BLE001
                    turn.error = own
    for turn in batch:
        turn.done = True


def _write(engine, entries: list[AuditEntry]) -> None:
    with engine.begin() as conn:
        last = _take_turn_and_last_event(conn)
        next_id, prev_hash = (last.id + 1, last.hash) if last else (1, GENESIS_HASH)
        rows = []
        for entry in entries:
            row = {**entry.__dict__, "id": next_id, "at": utcnow(),
                   "detail": entry.detail or {}, "prev_hash": prev_hash}
            row["hash"] = prev_hash = chain_hash(row["prev_hash"], row)
            rows.append(row)
            next_id += 1
        insert_rows(conn, AuditEvent.__table__, rows)
        every = current_app.config["AUDIT_CHECKPOINT_EVERY"]
        if every and rows[-1]["id"] // every > (rows[0]["id"] - 1) // every:
            _write_checkpoint(conn, rows[-1]["id"], rows[-1]["hash"])


# --- Signed checkpoints ----------------------------------------------------------------------

def checkpoint_message(row) -> bytes:
    """The canonical bytes a checkpoint's signature covers."""
    body = {"domain": CHECKPOINT_DOMAIN, "id": row["id"], "event_id": row["event_id"],
            "event_hash": row["event_hash"], "at": to_json_value(row["at"]),
            "key_id": row["key_id"]}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _write_checkpoint(conn, event_id: int, event_hash: str) -> dict:
    signing = signer()
    last_id = conn.execute(select(func.max(AuditCheckpoint.id))).scalar() or 0
    row = {"id": last_id + 1, "event_id": event_id, "event_hash": event_hash, "at": utcnow(),
           "key_id": signing.key_id}
    row["signature"] = signing.sign(checkpoint_message(row))
    conn.execute(insert(AuditCheckpoint), [row])
    return row


def checkpoint() -> dict | None:
    """Sign the newest row now; None when the newest row already has a checkpoint."""
    with _engine().begin() as conn:
        last = _take_turn_and_last_event(conn)
        covered = conn.execute(select(func.max(AuditCheckpoint.event_id))).scalar() or 0
        if last is None or last.id <= covered:
            return None
        return _write_checkpoint(conn, last.id, last.hash)


@dataclass
class ChainReport:
    ok: bool
    rows_checked: int
    first_bad_id: int | None = None
    problem: str | None = None
    checkpoint_id: int | None = None  # set when a checkpoint itself is the problem
    checkpoints_checked: int = 0
    uncovered_after: int | None = None  # rows after this one have no checkpoint yet


def _check_checkpoints(checkpoints: list[dict]) -> ChainReport | None:
    """Each checkpoint present, in order, and signed by a configured key."""
    verifying = signer()
    previous_event = 0
    for number, row in enumerate(checkpoints, start=1):
        def bad(problem: str) -> ChainReport:
            return ChainReport(False, 0, checkpoint_id=number, problem=problem)
        if row["id"] != number:
            return bad(f"checkpoint {number} is missing: it was deleted "
                       f"(the next checkpoint is {row['id']}).")
        if not verifying.knows(row["key_id"]):
            return bad(f"checkpoint {number} is signed by key {row['key_id']}, which is not "
                       "among the configured keys (AUDIT_SIGNING_KEY, AUDIT_VERIFY_KEYS).")
        if not verifying.verifies(row["key_id"], checkpoint_message(row), row["signature"]):
            return bad(f"checkpoint {number} has a signature that does not match it: it was "
                       "forged or edited.")
        if row["event_id"] < previous_event:
            return bad(f"checkpoint {number} names row {row['event_id']}, before the row of "
                       "the checkpoint ahead of it.")
        previous_event = row["event_id"]
    return None


def verify(batch_size: int = 5000) -> ChainReport:
    """Re-walk the chain against the signed checkpoints; name the first row that was edited,
    deleted or inserted, or the first checkpoint that does not hold."""
    with _engine().connect() as conn:
        checkpoints = [dict(row) for row in conn.execute(
            select(AuditCheckpoint.__table__).order_by(AuditCheckpoint.id)).mappings()]
    broken = _check_checkpoints(checkpoints)
    if broken is not None:
        return broken
    pinned: dict[int, list[dict]] = {}
    for row in checkpoints:
        pinned.setdefault(row["event_id"], []).append(row)
    report = _walk(batch_size, pinned)
    if not report.ok:
        return report
    report.checkpoints_checked = len(checkpoints)
    last_pinned = max(pinned, default=0)
    if last_pinned > report.rows_checked:
        vouching = pinned[last_pinned][0]["id"]
        return ChainReport(False, report.rows_checked, report.rows_checked + 1,
                           f"rows {report.rows_checked + 1} to {last_pinned} are missing: "
                           f"checkpoint {vouching} was signed for row {last_pinned}, so the end "
                           "of the log was cut off.")
    if report.rows_checked > last_pinned:
        report.uncovered_after = last_pinned
    return report


def _walk(batch_size: int, pinned: dict[int, list[dict]]) -> ChainReport:
    expected_id, prev_hash, checked = 1, GENESIS_HASH, 0
    last_good_pin = 0
    with _engine().connect() as conn:
        last_id = 0
        while True:
            rows = conn.execute(select(AuditEvent.__table__).where(AuditEvent.id > last_id)
                                .order_by(AuditEvent.id).limit(batch_size)).mappings().all()
            if not rows:
                break
            for row in rows:
                row = dict(row)
                if row["id"] != expected_id:
                    return ChainReport(False, checked, expected_id,
                                       f"row {expected_id} is missing: it was deleted "
                                       f"(the next row is {row['id']}).")
                if row["prev_hash"] != prev_hash:
                    return ChainReport(False, checked, row["id"],
                                       f"row {row['id']} does not follow row {row['id'] - 1}: "
                                       "a row was inserted or replaced here.")
                if chain_hash(prev_hash, row) != row["hash"]:
                    return ChainReport(False, checked, row["id"],
                                       f"row {row['id']} was edited after it was written.")
                for point in pinned.get(row["id"], []):
                    if point["event_hash"] != row["hash"]:
                        return ChainReport(
                            False, checked, row["id"],
                            f"row {row['id']} does not match signed checkpoint {point['id']}: "
                            f"rows {last_good_pin + 1} to {row['id']} were rewritten and their "
                            "hashes recomputed.")
                    last_good_pin = row["id"]
                prev_hash, expected_id, checked = row["hash"], expected_id + 1, checked + 1
                last_id = row["id"]
    return ChainReport(True, checked)
