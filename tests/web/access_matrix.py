"""Who may use which endpoint: the authorization matrix as data.

Keyed by endpoint name (``rule.endpoint`` in ``app.url_map``); each entry gives the
expected outcome for an anonymous visitor and for a user holding each of the eight
roles at the clinic they are signed in to:

- ``"ok"``: access is allowed. A GET answers 200 or redirects somewhere other than the
  sign-in page; a POST answers anything but 401, 403, 404, 405, a server error or a
  redirect to the sign-in page (whether its data is valid does not matter here).
- ``"denied"``: 403.
- ``"login"``: a redirect to the sign-in page (``/login``).
- ``"unauthenticated"``: 401 (the sync API's answer to a missing or ended session).

A new route without an entry here fails tests/web/test_access_matrix.py.
"""
from __future__ import annotations

from app.domain import roles as r

OK, DENIED, LOGIN, UNAUTHENTICATED = "ok", "denied", "login", "unauthenticated"
ANONYMOUS = "anonymous"
WHO = (ANONYMOUS, *r.ROLES)

CLINICAL = r.CLINICAL_ROLES                         # clerk, nurse, clinician, pharmacist, lab
ADMINS = r.ADMIN_ROLES                              # clinic_admin, org_admin
CONSOLE = r.ADMIN_ROLES | {r.PRIVACY_OFFICER}       # the administration console's front page
AUDIT = r.AUDIT_VIEWER_ROLES                        # admins and the privacy officer


def _only(allowed: frozenset[str] | set[str], anonymous: str = LOGIN) -> dict[str, str]:
    """Signed-in roles in `allowed` get in, other roles get 403, anonymous is sent to sign in."""
    return {ANONYMOUS: anonymous, **{role: OK if role in allowed else DENIED for role in r.ROLES}}


def _everyone(anonymous: str = OK) -> dict[str, str]:
    return {ANONYMOUS: anonymous, **{role: OK for role in r.ROLES}}


SIGNED_IN = _everyone(anonymous=LOGIN)
PUBLIC = _everyone()

MATRIX: dict[str, dict[str, str]] = {
    # Signing in and out: open to everyone; the session decides what happens next.
    "auth.login_get": PUBLIC,
    "auth.login_post": PUBLIC,
    "auth.login_code_get": PUBLIC,
    "auth.login_code_post": PUBLIC,
    "auth.login_setup_get": PUBLIC,
    "auth.login_setup_post": PUBLIC,
    "auth.login_passkey_options_post": PUBLIC,
    "auth.login_passkey_post": PUBLIC,
    # Signing out always ends on the sign-in page, signed in or not: that is its job.
    "auth.logout_post": {who: LOGIN for who in WHO},
    "auth.session_clinic_post": SIGNED_IN,

    # A person's own account settings (their passkeys): every signed-in role.
    "account.account_get": SIGNED_IN,
    "account.account_passkeys_options_post": SIGNED_IN,
    "account.account_passkeys_post": SIGNED_IN,
    "account.account_passkeys_remove_post": SIGNED_IN,

    # Home sends each role to its own starting page.
    "worklist.home_get": SIGNED_IN,

    # Patient records: clinical roles only.
    "worklist.worklist_get": _only(CLINICAL),
    "patients.patients_get": _only(CLINICAL),
    "patients.patients_new_get": _only(CLINICAL),
    "patients.patients_new_post": _only(CLINICAL),
    "patients.patient_get": _only(CLINICAL),
    "patients.patient_history_get": _only(CLINICAL),
    "patients.patient_edit_get": _only(CLINICAL),
    "patients.patient_edit_post": _only(CLINICAL),
    "patients.patient_identifiers_post": _only(CLINICAL),
    "patients.patient_identifier_retire_post": _only(CLINICAL),
    "clinical.patient_visits_post": _only(CLINICAL),
    "clinical.visit_get": _only(CLINICAL),
    "clinical.visit_move_post": _only(CLINICAL),
    "clinical.patient_vitals_get": _only(CLINICAL),
    "clinical.patient_vitals_post": _only(CLINICAL),
    "clinical.patient_conditions_get": _only(CLINICAL),
    "clinical.patient_conditions_post": _only(CLINICAL),
    "clinical.condition_resolve_post": _only(CLINICAL),
    "clinical.patient_notes_get": _only(CLINICAL),
    "clinical.patient_notes_post": _only(CLINICAL),
    "clinical.note_edit_get": _only(CLINICAL),
    "clinical.note_edit_post": _only(CLINICAL),
    "clinical.note_sign_post": _only(CLINICAL),
    "clinical.note_amend_get": _only(CLINICAL),
    "clinical.note_amend_post": _only(CLINICAL),
    "clinical.patient_medications_get": _only(CLINICAL),
    "clinical.patient_medications_post": _only(CLINICAL),
    "clinical.medication_dispense_post": _only(CLINICAL),
    "clinical.patient_appointments_get": _only(CLINICAL),
    "clinical.patient_appointments_post": _only(CLINICAL),
    "clinical.appointment_cancel_post": _only(CLINICAL),
    "clinical.patient_consents_get": _only(CLINICAL),
    "clinical.patient_consents_post": _only(CLINICAL),
    "conflicts.conflicts_get": _only(CLINICAL),
    "conflicts.conflict_resolve_post": _only(CLINICAL),

    # Administration console.
    "admin.index_get": _only(CONSOLE),
    "admin.audit_get": _only(AUDIT),
    "admin.users_get": _only(ADMINS),
    "admin.users_new_get": _only(ADMINS),
    "admin.users_post": _only(ADMINS),
    "admin.user_get": _only(ADMINS),
    "admin.user_disable_post": _only(ADMINS),
    "admin.user_enable_post": _only(ADMINS),
    "admin.user_reset_mfa_post": _only(ADMINS),
    "admin.user_password_post": _only(ADMINS),
    "admin.user_reset_passkeys_post": _only(ADMINS),
    "admin.user_memberships_post": _only(ADMINS),
    "admin.membership_delete_post": _only(ADMINS),
    "admin.clinics_get": _only(ADMINS),
    "admin.clinics_post": _only({r.ORG_ADMIN}),       # a clinic administrator cannot add clinics
    "admin.clinic_teams_post": _only(ADMINS),
    "admin.devices_get": _only(ADMINS),

    # Break-glass: a clinician opens a patient of another clinic; the privacy officer reviews.
    "break_glass.break_glass_get": _only({r.CLINICIAN}),
    "break_glass.break_glass_post": _only({r.CLINICIAN}),
    "break_glass.patient_break_glass_post": _only({r.CLINICIAN}),
    "break_glass.admin_break_glass_get": _only({r.PRIVACY_OFFICER}),
    "break_glass.admin_break_glass_grant_get": _only({r.PRIVACY_OFFICER}),
    "break_glass.admin_break_glass_review_post": _only({r.PRIVACY_OFFICER}),

    # Sync API: devices of clinical staff. Anyone not signed in gets 401 (JSON), never a
    # redirect to a sign-in page a sync client cannot show.
    "sync.push_route": _only(CLINICAL, anonymous=UNAUTHENTICATED),
    "sync.pull_route": _only(CLINICAL, anonymous=UNAUTHENTICATED),
    "sync.heartbeat_route": _only(CLINICAL, anonymous=UNAUTHENTICATED),
    "sync.events_route": _only(CLINICAL, anonymous=UNAUTHENTICATED),
    "sync.openapi_route": PUBLIC,

    # The offline app: the worker's script, manifest and templates hold no patient data and
    # are fetched before anyone signs in; the session and device page follow the person.
    "offline.service_worker_get": PUBLIC,
    "offline.manifest_get": PUBLIC,
    "offline.templates_get": PUBLIC,
    "offline.messages_get": PUBLIC,
    "offline.session_get": SIGNED_IN,
    "offline.device_get": SIGNED_IN,
    "device_keys.device_secret_post": _only(CLINICAL),
    "device_keys.outbox_recovery_post": _only(CLINICAL),
    "offline.device_discarded_post": _only(CLINICAL),
    "offline.device_reads_post": _only(CLINICAL),
}
