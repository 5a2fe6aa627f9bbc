"""Organization, clinics, teams and memberships (who holds which role where)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.records import RecordMixin
from app.models.types import IdType, UTCDateTime, utcnow


class Organization(db.Model):
    __tablename__ = "organization"
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Clinic(RecordMixin, db.Model):
    __tablename__ = "clinic"
    RECORD_FIELDS = ("id", "organization_id", "name", "code")
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(20), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    organization: Mapped[Organization] = relationship()


class Team(db.Model):
    __tablename__ = "team"
    __table_args__ = (UniqueConstraint("clinic_id", "name"),)
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinic.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    clinic: Mapped[Clinic] = relationship()


class Membership(db.Model):
    """A user holds one role at one clinic, optionally within a team."""

    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("user_id", "clinic_id", "role"),)
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id"), index=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinic.id"), index=True)
    team_id: Mapped[str | None] = mapped_column(ForeignKey("team.id"))
    role: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    clinic: Mapped[Clinic] = relationship()
    team: Mapped[Team | None] = relationship()
