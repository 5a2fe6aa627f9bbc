"""Break-glass access: a clinician's time-limited opening of a patient outside their scope,
and the privacy officer's review of it (DESIGN.md §6)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.clinical import Patient
from app.models.org import Clinic
from app.models.types import IdType, UTCDateTime, utcnow
from app.models.users import User


class BreakGlassGrant(db.Model):
    __tablename__ = "break_glass_grant"
    # Every audited request of a clinician asks for their grants that are still running.
    __table_args__ = (Index("ix_break_glass_grant_user_expires", "user_id", "expires_at"),)
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id"))
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinic.id"))  # where the user worked
    # The patient's organization: the privacy officers who review the grant are its own.
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    review_due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reviewed_by: Mapped[str | None] = mapped_column(ForeignKey("user.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disposition: Mapped[str | None] = mapped_column(String(20))
    review_note: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    reviewer: Mapped[User | None] = relationship(foreign_keys=[reviewed_by])
    patient: Mapped[Patient] = relationship()
    clinic: Mapped[Clinic] = relationship()
