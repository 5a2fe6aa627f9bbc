"""The audit log: its own database, append-only, each row chained to the one before."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import JSONType, UTCDateTime

# 64 bits: every sync request appends events, and a fleet would reach a 32-bit integer's end
# in years (migration 0009). SQLite's INTEGER is 64 bits as it is.
AUDIT_ID = BigInteger().with_variant(Integer, "sqlite")


class AuditEvent(db.Model):
    __bind_key__ = "audit"
    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(AUDIT_ID, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    username: Mapped[str | None] = mapped_column(String(80))
    role: Mapped[str | None] = mapped_column(String(200))
    clinic_id: Mapped[str | None] = mapped_column(String(36))
    patient_id: Mapped[str | None] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(60), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    device: Mapped[str | None] = mapped_column(String(64))
    # Indexed: the privacy officer's review counts and lists the events of each grant.
    break_glass_id: Mapped[str | None] = mapped_column(String(36), index=True)
    request_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[dict] = mapped_column(JSONType)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
