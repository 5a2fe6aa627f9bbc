"""All models, imported once so metadata is complete for migrations."""
from app.models.audit import AuditEvent
from app.models.audit_checkpoint import AuditCheckpoint
from app.models.break_glass import BreakGlassGrant
from app.models.clinical import (
    ENTITY_MODELS, Appointment, Condition, Consent, MedicationDispense, MedicationRequest, Note,
    NoteAddendum, Observation, Patient, PatientIdentifier, Visit,
)
from app.models.ledger import ChangeLog, Conflict, EntityHistory, MutationResult
from app.models.org import Clinic, Membership, Organization, Team
from app.models.sync import ServerEpoch, SyncClient, SyncSubset
from app.models.users import ApiToken, PasskeyCredential, User, UserSession, WebAuthnChallenge

__all__ = [
    "ENTITY_MODELS", "Appointment", "ApiToken", "AuditCheckpoint", "AuditEvent", "BreakGlassGrant", "ChangeLog", "Clinic", "Condition",
    "Conflict", "Consent", "EntityHistory", "MedicationDispense", "MedicationRequest",
    "Membership", "MutationResult", "Note", "NoteAddendum", "Observation", "Organization",
    "PasskeyCredential", "Patient", "PatientIdentifier", "ServerEpoch", "SyncClient", "SyncSubset", "Team", "User", "UserSession", "Visit", "WebAuthnChallenge",
]
