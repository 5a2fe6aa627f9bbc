"""All models, imported once so metadata is complete for migrations."""
from app.models.audit import AuditEvent
from app.models.clinical import (
    ENTITY_MODELS, Appointment, Condition, Consent, MedicationDispense, MedicationRequest, Note,
    NoteAddendum, Observation, Patient, PatientIdentifier, Visit,
)
from app.models.ledger import ChangeLog, Conflict, EntityHistory, MutationResult
from app.models.org import Clinic, Membership, Organization, Team
from app.models.sync import ServerEpoch, SyncClient, SyncSubset
from app.models.users import ApiToken, User, UserSession

__all__ = [
    "ENTITY_MODELS", "Appointment", "ApiToken", "AuditEvent", "ChangeLog", "Clinic", "Condition",
    "Conflict", "Consent", "EntityHistory", "MedicationDispense", "MedicationRequest",
    "Membership", "MutationResult", "Note", "NoteAddendum", "Observation", "Organization",
    "Patient", "PatientIdentifier", "ServerEpoch", "SyncClient", "SyncSubset", "Team", "User", "UserSession", "Visit",
]
