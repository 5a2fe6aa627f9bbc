"""Roles, what each may do, and which station each works at."""
from __future__ import annotations

REGISTRATION_CLERK = "registration_clerk"
NURSE = "nurse"
CLINICIAN = "clinician"
PHARMACIST = "pharmacist"
LAB = "lab"
CLINIC_ADMIN = "clinic_admin"
ORG_ADMIN = "org_admin"
PRIVACY_OFFICER = "privacy_officer"

ROLES = (REGISTRATION_CLERK, NURSE, CLINICIAN, PHARMACIST, LAB, CLINIC_ADMIN, ORG_ADMIN,
         PRIVACY_OFFICER)
ROLE_LABELS = {
    REGISTRATION_CLERK: "Registration clerk",
    NURSE: "Nurse",
    CLINICIAN: "Clinician",
    PHARMACIST: "Pharmacist",
    LAB: "Lab",
    CLINIC_ADMIN: "Clinic administrator",
    ORG_ADMIN: "Organization administrator",
    PRIVACY_OFFICER: "Privacy officer",
}

# Roles that read and write patient records. Administrators and privacy officers
# manage the system and review access; they do not open charts by default.
CLINICAL_ROLES = frozenset({REGISTRATION_CLERK, NURSE, CLINICIAN, PHARMACIST, LAB})
ADMIN_ROLES = frozenset({CLINIC_ADMIN, ORG_ADMIN})
AUDIT_VIEWER_ROLES = frozenset({CLINIC_ADMIN, ORG_ADMIN, PRIVACY_OFFICER})
# Break-glass (DESIGN.md §6): the clinician decides on care in an emergency, so only they
# open a patient outside their clinic; the privacy officer reviews each opening.
BREAK_GLASS_ROLES = frozenset({CLINICIAN})
BREAK_GLASS_REVIEW_ROLES = frozenset({PRIVACY_OFFICER})

HOME_STATION = {
    REGISTRATION_CLERK: "registration",
    NURSE: "triage",
    CLINICIAN: "consultation",
    LAB: "lab",
    PHARMACIST: "pharmacy",
}


def can_read_patients(roles: frozenset[str]) -> bool:
    return bool(roles & CLINICAL_ROLES)


def can_administer(roles: frozenset[str]) -> bool:
    return bool(roles & ADMIN_ROLES)


def can_view_audit(roles: frozenset[str]) -> bool:
    return bool(roles & AUDIT_VIEWER_ROLES)


def can_break_glass(roles: frozenset[str]) -> bool:
    return bool(roles & BREAK_GLASS_ROLES)


def can_review_break_glass(roles: frozenset[str]) -> bool:
    return bool(roles & BREAK_GLASS_REVIEW_ROLES)


def home_station(roles: frozenset[str]) -> str | None:
    for role in (REGISTRATION_CLERK, NURSE, CLINICIAN, LAB, PHARMACIST):
        if role in roles:
            return HOME_STATION[role]
    return None


def by_clinic(memberships) -> dict[str, frozenset[str]]:
    """(clinic_id, role) pairs, clinics in the order given, as each clinic's set of roles.
    A pair with no clinic (a person with no membership, from an outer join) adds nothing."""
    roles: dict[str, set[str]] = {}
    for clinic_id, role in memberships:
        if clinic_id is not None:
            roles.setdefault(clinic_id, set()).add(role)
    return {clinic_id: frozenset(held) for clinic_id, held in roles.items()}
