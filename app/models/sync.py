"""What the server keeps about each device that syncs (DESIGN.md §5)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.types import IdType, JSONType, UTCDateTime, utcnow


class SyncClient(db.Model):
    """One browser install (or hub, or script) of one user: its order and its health."""

    __tablename__ = "sync_client"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id"), index=True)
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinic.id"), index=True)
    # The highest seq whose result is stored: the next mutation must carry last_seq + 1.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Generation of the device's patient subset, advanced when patients enter or leave it.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_push_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_pull_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    telemetry: Mapped[dict | None] = mapped_column(JSONType)
    telemetry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    user_agent: Mapped[str | None] = mapped_column(String(300))

    user = relationship("User")


class SyncSubset(db.Model):
    """Which patients a device holds, per generation, so a lost pull answer can be replayed."""

    __tablename__ = "sync_subset"
    __table_args__ = (Index("ix_sync_subset_client_removed", "client_id", "removed_gen"),)
    client_id: Mapped[str] = mapped_column(ForeignKey("sync_client.client_id", ondelete="CASCADE"),
                                           primary_key=True)
    patient_id: Mapped[str] = mapped_column(IdType, primary_key=True)
    added_gen: Mapped[int] = mapped_column(Integer, primary_key=True)
    removed_gen: Mapped[int | None] = mapped_column(Integer)


class ServerEpoch(db.Model):
    """Changes when the database is restored from a backup, so devices refill and re-push."""

    __tablename__ = "server_epoch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str | None] = mapped_column(String(200))
