"""Clinical records, each shaped so its FHIR R4 resource follows mechanically.

Every row carries a version (+1 per change); its earlier states are kept in
entity_history, so an overwritten or merged value is never lost.
"""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.records import RecordMixin, to_json_value
from app.models.sealed import NATIONAL_ID, SealedField, SealedRow
from app.models.types import IdType, UTCDateTime, utcnow


class VersionedEntity(RecordMixin):
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("user.id"))


class Patient(VersionedEntity, db.Model):
    __tablename__ = "patient"
    DEMOGRAPHIC_FIELDS = ("given_name", "family_name", "sex", "birth_date", "phone", "address")
    RECORD_FIELDS = ("id", "version", *DEMOGRAPHIC_FIELDS, "clinic_id", "organization_id",
                     "created_at", "updated_at")
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), index=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinic.id"), index=True)  # registered at
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100), index=True)
    sex: Mapped[str] = mapped_column(String(10))
    birth_date: Mapped[date] = mapped_column(Date)
    phone: Mapped[str | None] = mapped_column(String(40), index=True)
    address: Mapped[str | None] = mapped_column(String(300))

    identifiers: Mapped[list[PatientIdentifier]] = relationship(
        order_by="PatientIdentifier.created_at", viewonly=True)
    RECORD_RELATIONSHIPS = ("identifiers",)

    def to_record(self) -> dict:
        record = super().to_record()
        record["identifiers"] = [
            {"id": i.id, "system": i.system, "value": i.value} for i in self.identifiers if i.active
        ]
        return record


class PatientIdentifier(SealedRow, VersionedEntity, db.Model):
    __tablename__ = "patient_identifier"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_patient_identifier_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "patient_id", "system", "value", "active", "retired_reason",
                     "created_at", "updated_at")
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    system: Mapped[str] = mapped_column(String(40))
    value = SealedField()
    # Wide enough for a sealed 100-character value.
    value_stored: Mapped[str] = mapped_column("value", String(640))
    # HMAC of the normalised value: finds a national id without opening every one.
    value_index: Mapped[str | None] = mapped_column(String(64), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    retired_reason: Mapped[str | None] = mapped_column(String(200))

    def seals(self, name: str) -> bool:
        return self.system == NATIONAL_ID

    def seal_pending(self, cipher) -> None:
        if "value" in self.pending_plaintext():
            self.value_index = cipher.blind_index(self.pending_plaintext()["value"])
        super().seal_pending(cipher)


class Visit(VersionedEntity, db.Model):
    __tablename__ = "visit"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_visit_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "patient_id", "clinic_id", "station", "status", "reason",
                     "started_at", "ended_at", "station_since", "updated_at")
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinic.id"), index=True)
    station: Mapped[str] = mapped_column(String(20), index=True)
    status: Mapped[str] = mapped_column(String(20), default="in-progress")
    reason: Mapped[str | None] = mapped_column(String(300))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    station_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    patient: Mapped[Patient] = relationship()


class Observation(VersionedEntity, db.Model):
    __tablename__ = "observation"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_observation_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "patient_id", "visit_id", "code", "unit", "effective_at",
                     "created_at")
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    visit_id: Mapped[str | None] = mapped_column(ForeignKey("visit.id"), index=True)
    code: Mapped[str] = mapped_column(String(20))
    value_number: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str] = mapped_column(String(20))
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def to_record(self) -> dict:
        record = super().to_record()
        record["value"] = self.record_value(self.value_number, self.value_text)
        return record

    @classmethod
    def record_of(cls, values: dict) -> dict:
        record = super().record_of(values)
        record["value"] = cls.record_value(values.get("value_number"), values.get("value_text"))
        return record

    @staticmethod
    def record_value(value_number, value_text):
        """The record's one `value`: sync reads the columns without the ORM and uses this too."""
        return value_number if value_number is not None else value_text


class Condition(SealedRow, VersionedEntity, db.Model):
    __tablename__ = "condition"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_condition_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "patient_id", "visit_id", "code", "text", "clinical_status",
                     "onset_date", "resolved_at", "created_at", "updated_at")
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    visit_id: Mapped[str | None] = mapped_column(ForeignKey("visit.id"))
    code = SealedField()
    text = SealedField()
    code_stored: Mapped[str | None] = mapped_column("code", String(200))
    text_stored: Mapped[str] = mapped_column("text", Text)
    clinical_status: Mapped[str] = mapped_column(String(20), default="active")
    onset_date: Mapped[date | None] = mapped_column(Date)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Note(SealedRow, VersionedEntity, db.Model):
    __tablename__ = "note"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_note_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "patient_id", "visit_id", "text", "status", "created_by",
                     "signed_by", "signed_at", "created_at", "updated_at")
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    visit_id: Mapped[str | None] = mapped_column(ForeignKey("visit.id"))
    text = SealedField()
    text_stored: Mapped[str] = mapped_column("text", Text)
    status: Mapped[str] = mapped_column(String(20), default="draft")
    signed_by: Mapped[str | None] = mapped_column(ForeignKey("user.id"))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    patient: Mapped[Patient] = relationship(viewonly=True)
    addenda: Mapped[list[NoteAddendum]] = relationship(order_by="NoteAddendum.created_at",
                                                       viewonly=True)
    RECORD_RELATIONSHIPS = ("addenda",)

    def to_record(self) -> dict:
        record = super().to_record()
        record["addenda"] = [a.to_record() for a in self.addenda]
        return record


class NoteAddendum(SealedRow, VersionedEntity, db.Model):
    """An amendment to a signed note: the signed text itself never changes."""

    __tablename__ = "note_addendum"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_note_addendum_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "note_id", "patient_id", "text", "created_by", "created_at")
    note_id: Mapped[str] = mapped_column(ForeignKey("note.id"), index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    text = SealedField()
    text_stored: Mapped[str] = mapped_column("text", Text)


class MedicationRequest(VersionedEntity, db.Model):
    __tablename__ = "medication_request"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_medication_request_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "patient_id", "visit_id", "medication", "dose", "route",
                     "frequency", "duration_days", "quantity", "quantity_dispensed", "status",
                     "created_by", "created_at", "updated_at")
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    visit_id: Mapped[str | None] = mapped_column(ForeignKey("visit.id"))
    medication: Mapped[str] = mapped_column(String(200))
    dose: Mapped[str] = mapped_column(String(100))
    route: Mapped[str] = mapped_column(String(40))
    frequency: Mapped[str] = mapped_column(String(100))
    duration_days: Mapped[int | None] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(Integer)
    quantity_dispensed: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="active")


class MedicationDispense(VersionedEntity, db.Model):
    __tablename__ = "medication_dispense"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_medication_dispense_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "request_id", "patient_id", "quantity", "created_by",
                     "created_at")
    request_id: Mapped[str] = mapped_column(ForeignKey("medication_request.id"), index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    quantity: Mapped[int] = mapped_column(Integer)


class Appointment(VersionedEntity, db.Model):
    __tablename__ = "appointment"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_appointment_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "patient_id", "clinic_id", "starts_at", "reason", "status",
                     "cancel_reason", "created_at", "updated_at")
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinic.id"), index=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reason: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="booked")
    cancel_reason: Mapped[str | None] = mapped_column(String(300))


class Consent(VersionedEntity, db.Model):
    __tablename__ = "consent"
    # A patient's records, in id order: sync walks them this way (sync_api/pull.py).
    __table_args__ = (Index("ix_consent_patient_id_id", "patient_id", "id"),)
    RECORD_FIELDS = ("id", "version", "patient_id", "visit_id", "scope", "signer_name",
                     "signer_relation", "signature_png", "signed_at", "created_by", "created_at")
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    visit_id: Mapped[str | None] = mapped_column(ForeignKey("visit.id"))
    scope: Mapped[str] = mapped_column(String(40))
    signer_name: Mapped[str] = mapped_column(String(200))
    signer_relation: Mapped[str] = mapped_column(String(40))
    signature_png: Mapped[str] = mapped_column(Text)  # data: URL, validated as a PNG on write
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)


ENTITY_MODELS = {
    "patient": Patient,
    "patient_identifier": PatientIdentifier,
    "visit": Visit,
    "observation": Observation,
    "condition": Condition,
    "note": Note,
    "note_addendum": NoteAddendum,
    "medication_request": MedicationRequest,
    "medication_dispense": MedicationDispense,
    "appointment": Appointment,
    "consent": Consent,
}

__all__ = [*(m.__name__ for m in ENTITY_MODELS.values()), "ENTITY_MODELS", "to_json_value"]
