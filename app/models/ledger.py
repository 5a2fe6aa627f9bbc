"""What every write leaves behind: history, change log, stored results, conflicts."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (BigInteger, FetchedValue, ForeignKey, Index, Integer, String,
                        UniqueConstraint, and_, tuple_)
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import IdType, JSONType, UTCDateTime, utcnow


class EntityHistory(db.Model):
    """Every state a record has been in, one row per version."""

    __tablename__ = "entity_history"
    __table_args__ = (UniqueConstraint("entity", "entity_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(IdType)
    version: Mapped[int] = mapped_column(Integer)
    record: Mapped[dict] = mapped_column(JSONType)
    mid: Mapped[str | None] = mapped_column(IdType)
    changed_by: Mapped[str | None] = mapped_column(ForeignKey("user.id"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChangeLog(db.Model):
    """Commit-ordered feed of changes that devices pull (DESIGN.md §5)."""

    __tablename__ = "change_log"
    __table_args__ = (Index("ix_change_log_clinic_seq", "clinic_id", "seq"),
                      Index("ix_change_log_position", "txid", "seq"),
                      Index("ix_change_log_origin_client_id", "origin_client_id"))
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                     primary_key=True, autoincrement=True)
    # The writing transaction's id on PostgreSQL (0 on SQLite, whose single writer already
    # commits in seq order). Pulls read in (txid, seq) order below the oldest running
    # transaction, so a change committed late is never skipped. The database fills it in
    # (migration 0007): asking PostgreSQL for it first would cost every write a round trip.
    txid: Mapped[int] = mapped_column(BigInteger, server_default=FetchedValue())
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(IdType)
    version: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(10))
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinic.id"))
    patient_id: Mapped[str | None] = mapped_column(IdType, index=True)
    origin_mid: Mapped[str | None] = mapped_column(IdType)
    origin_client_id: Mapped[str | None] = mapped_column(String(64))
    origin_seq: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @classmethod
    def after(cls, txid, seq, dialect_name: str):
        """The rows after log position (txid, seq) (values or bind parameters), as a
        condition the position index serves as a range on every database."""
        if dialect_name == "sqlite":
            # Every row here has txid 0. SQLite serves only the first column of a row-value
            # range from an index, so `(txid, seq) > (0, n)` read the whole log.
            return and_(cls.txid == txid, cls.seq > seq)
        return tuple_(cls.txid, cls.seq) > tuple_(txid, seq)


class MutationResult(db.Model):
    """The answer given to a mutation, kept so a replay gets the same answer."""

    __tablename__ = "mutation_result"
    __table_args__ = (UniqueConstraint("client_id", "seq"),)
    mid: Mapped[str] = mapped_column(IdType, primary_key=True)
    client_id: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(60))
    payload_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    result: Mapped[dict] = mapped_column(JSONType)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("user.id"))
    source: Mapped[str] = mapped_column(String(20))
    client_ts: Mapped[str | None] = mapped_column(String(40))  # the device's claim, never used to order
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Conflict(db.Model):
    """A concurrent edit the rules could not merge, waiting for a person to decide."""

    __tablename__ = "conflict"
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinic.id"), index=True)
    patient_id: Mapped[str | None] = mapped_column(IdType, index=True)
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(IdType)
    mid: Mapped[str] = mapped_column(IdType)
    mutation_type: Mapped[str] = mapped_column(String(60))
    fields: Mapped[list] = mapped_column(JSONType)
    server_values: Mapped[dict] = mapped_column(JSONType)
    incoming_values: Mapped[dict] = mapped_column(JSONType)
    base_values: Mapped[dict] = mapped_column(JSONType)
    server_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="open")
    raised_by: Mapped[str | None] = mapped_column(ForeignKey("user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_by: Mapped[str | None] = mapped_column(ForeignKey("user.id"))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution: Mapped[dict | None] = mapped_column(JSONType)
