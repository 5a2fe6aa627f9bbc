"""Append to and verify the hash-chained audit log (DESIGN.md §7).

Events are written in their own transaction on the audit database, before the
access they describe is answered; if that write fails the caller must deny.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from sqlalchemy import insert, select, text

from app.extensions import db
from app.models import AuditEvent
from app.models.records import to_json_value
from app.models.types import utcnow

GENESIS_HASH = "0" * 64
CHAINED_FIELDS = ("id", "at", "user_id", "username", "role", "clinic_id", "patient_id", "action",
                  "outcome", "device", "break_glass_id", "request_id", "detail")
_PG_LOCK_KEY = 0x41554454  # one chain, so appends take turns on PostgreSQL


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


def append(entries: list[AuditEntry]) -> None:
    if not entries:
        return
    try:
        with _engine().begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            last = conn.execute(select(AuditEvent.id, AuditEvent.hash)
                                .order_by(AuditEvent.id.desc()).limit(1)).first()
            next_id, prev_hash = (last.id + 1, last.hash) if last else (1, GENESIS_HASH)
            rows = []
            for entry in entries:
                row = {**entry.__dict__, "id": next_id, "at": utcnow(),
                       "detail": entry.detail or {}, "prev_hash": prev_hash}
                row["hash"] = prev_hash = chain_hash(row["prev_hash"], row)
                rows.append(row)
                next_id += 1
            conn.execute(insert(AuditEvent), rows)
    except Exception as exc:  # any failure at all means the access is not recorded
        raise AuditUnavailable(str(exc)) from exc


@dataclass
class ChainReport:
    ok: bool
    rows_checked: int
    first_bad_id: int | None = None
    problem: str | None = None


def verify(batch_size: int = 5000) -> ChainReport:
    """Re-walk the chain; name the first row that was edited, deleted or inserted."""
    expected_id, prev_hash, checked = 1, GENESIS_HASH, 0
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
                prev_hash, expected_id, checked = row["hash"], expected_id + 1, checked + 1
                last_id = row["id"]
    return ChainReport(True, checked)
