"""Signed checkpoints of the audit chain: which row, its hash, signed with Ed25519.

A hash chain alone shows an edit only to someone who kept an older hash: whoever can write
the table can rewrite every row after the edit consistently. A checkpoint's signature needs
a key the database does not hold, so a rewritten chain no longer matches it.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.audit import AUDIT_ID
from app.models.types import UTCDateTime


class AuditCheckpoint(db.Model):
    __bind_key__ = "audit"
    __tablename__ = "audit_checkpoint"
    # Numbered 1, 2, 3... and the number is signed: a checkpoint deleted from the middle
    # leaves a gap that no renumbering can hide.
    id: Mapped[int] = mapped_column(AUDIT_ID, primary_key=True, autoincrement=False)
    event_id: Mapped[int] = mapped_column(AUDIT_ID)
    event_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(100))  # base64 of 64 bytes
