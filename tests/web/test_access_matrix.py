"""Every endpoint, every role: who gets in, who is refused, who is sent to sign in.

The expectations are in tests/web/access_matrix.py. URL parameters are filled with real
records of clinic A (the signed-in users' clinic), made fresh for every POST so one role's
write never changes what the next role finds.
"""
from __future__ import annotations

import functools
import itertools
import time
from datetime import date, timedelta
from functools import cached_property
from urllib.parse import urlsplit

import pyotp
import pytest
from sqlalchemy import select

from app.demo.signature import signature_data_url
from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import Conflict, Membership, Patient, User
from app.models.types import utcnow
from app.services import break_glass
from tests.conftest import PASSWORD
from tests.web.access_matrix import ANONYMOUS, DENIED, LOGIN, MATRIX, OK, UNAUTHENTICATED, WHO

REDIRECTS = (301, 302, 303, 307, 308)
_unique = itertools.count(1)


@pytest.fixture
def app_overrides():
    # An unexpected error is one wrong cell of the matrix (a 500), not the end of the test.
    return {"PROPAGATE_EXCEPTIONS": False}


def unique(prefix: str) -> str:
    return f"{prefix}{next(_unique)}x{new_id()[-6:]}"


class Records:
    """Records of clinic A, made on first use; the attribute names are the URL parameters."""

    def __init__(self, world, write, register):
        self.world, self.write, self.register = world, write, register
        self.clerk = world.actor(r.REGISTRATION_CLERK, "A")
        self.clinician = world.actor(r.CLINICIAN, "A")

    def _made(self, actor, type_name, entity, data, entity_id=None, **envelope):
        result = self.write(actor, type_name, entity, data, entity_id=entity_id, **envelope)
        assert result.status in ("applied", "conflict"), (type_name, result.error)
        return result

    @cached_property
    def patient_id(self) -> str:
        return self.register(self.clerk, phone="0700 000 001", address="Old road")

    @cached_property
    def visit_id(self) -> str:
        return self._made(self.clerk, "visit.start", "visit", {
            "patient_id": self.patient_id, "clinic_id": self.clerk.clinic_id,
            "station": "registration"}).entity_id

    @cached_property
    def condition_id(self) -> str:
        return self._made(self.clinician, "condition.add", "condition",
                          {"patient_id": self.patient_id, "text": "Malaria"}).entity_id

    @cached_property
    def note_id(self) -> str:
        return self._made(self.clinician, "note.write", "note",
                          {"patient_id": self.patient_id, "text": "Seen."}).entity_id

    @cached_property
    def request_id(self) -> str:
        return self._made(self.clinician, "medication.order", "medication_request", {
            "patient_id": self.patient_id, "medication": "Amoxicillin 500 mg", "dose": "1 capsule",
            "route": "oral", "frequency": "three times daily", "quantity": 10}).entity_id

    @cached_property
    def appointment_id(self) -> str:
        day = date(2099, 1, 1) + timedelta(days=next(_unique))  # a slot of its own
        return self._made(self.clerk, "appointment.book", "appointment", {
            "patient_id": self.patient_id, "starts_at": f"{day}T09:00:00Z"}).entity_id

    @cached_property
    def identifier_id(self) -> str:
        return self._made(self.clerk, "patient.identifier.add", "patient_identifier", {
            "patient_id": self.patient_id, "system": "mrn", "value": unique("MRN")}).entity_id

    @cached_property
    def conflict_id(self) -> str:
        base = {"phone": "0700 000 001"}
        self._made(self.world.actor(r.NURSE, "A"), "patient.update", "patient",
                   {"phone": "0722 222 222"}, entity_id=self.patient_id, base=base, base_version=1)
        result = self._made(self.clerk, "patient.update", "patient", {"phone": "0711 111 111"},
                            entity_id=self.patient_id, base=base, base_version=1)
        assert result.status == "conflict"
        return db.session.execute(select(Conflict.id).where(
            Conflict.entity_id == self.patient_id)).scalar_one()

    @cached_property
    def grant_id(self) -> str:
        """Clinician B's emergency access to clinic A's patient, waiting for review."""
        grant = break_glass.open_grant(
            self.world.user(r.CLINICIAN, "B"), self.world.clinics["B"].id,
            db.session.get(Patient, self.patient_id), "unconscious, checking allergies",
            utcnow(), break_glass.Limits(minutes=60, review_hours=72))
        db.session.commit()
        return grant.id

    @property
    def station(self) -> str:
        return "registration"

    @cached_property
    def _staff(self) -> tuple[str, str]:
        """A nurse of clinic A made for this probe, so changing them changes no one else."""
        template = self.world.user(r.NURSE, "A")
        user = User(id=new_id(), organization_id=self.world.org.id, username=unique("staff."),
                    display_name="Staff member", password_hash=template.password_hash,
                    totp_secret=pyotp.random_base32())
        db.session.add(user)
        db.session.flush()
        membership = Membership(id=new_id(), user_id=user.id, clinic_id=self.clinic_id,
                                role=r.NURSE)
        db.session.add(membership)
        db.session.commit()
        return user.id, membership.id

    @property
    def user_id(self) -> str:
        return self._staff[0]

    @property
    def membership_id(self) -> str:
        return self._staff[1]

    @property
    def clinic_id(self) -> str:
        return self.world.clinics["A"].id


def form_for(endpoint: str, records: Records, user: User) -> dict:
    """Form data that would be accepted, so an allowed request gets its ordinary answer."""
    signed_in = {
        "auth.login_post": {"username": user.username, "password": PASSWORD},
        "auth.session_clinic_post": {"clinic_id": records.clinic_id},
        "patients.patients_new_post": {"given_name": unique("Given"), "family_name": "Matrix",
                                       "sex": "female", "birth_date": "1990-01-01",
                                       "confirm_new": "yes"},
        "patients.patient_edit_post": {"given_name": "Tess", "base_given_name": "Test",
                                       "family_name": "Patient", "base_family_name": "Patient",
                                       "sex": "female", "base_sex": "female",
                                       "birth_date": "1990-05-17", "base_birth_date": "1990-05-17",
                                       "phone": "0700 000 001", "base_phone": "0700 000 001",
                                       "address": "Old road", "base_address": "Old road",
                                       "base_version": "1"},
        "patients.patient_identifiers_post": {"system": "mrn", "value": unique("MRN")},
        "patients.patient_identifier_retire_post": {"reason": "typed wrongly"},
        "clinical.patient_visits_post": {"station": "triage", "reason": "fever"},
        "clinical.visit_move_post": {"station": "triage", "base_version": "1"},
        "clinical.patient_vitals_post": {"heart_rate": "80"},
        "clinical.patient_conditions_post": {"text": "Malaria"},
        "clinical.condition_resolve_post": {"base_version": "1"},
        "clinical.patient_notes_post": {"text": "Seen today."},
        "clinical.note_edit_post": {"text": "Seen twice.", "base_text": "Seen.",
                                    "base_version": "1"},
        "clinical.note_sign_post": {"base_version": "1"},
        "clinical.note_amend_post": {"text": "Addendum."},
        "clinical.patient_medications_post": {"medication": "Paracetamol", "dose": "1 tablet",
                                              "route": "oral", "frequency": "daily",
                                              "quantity": "5"},
        "clinical.medication_dispense_post": {"quantity": "1"},
        "clinical.patient_appointments_post": {"starts_at": "2099-06-01T09:00",
                                               "tz_offset": "+00:00"},
        "clinical.appointment_cancel_post": {"reason": "Feeling better", "base_version": "1"},
        "clinical.patient_consents_post": {"scope": "treatment", "signer_name": "Signer",
                                           "signer_relation": "self",
                                           "signature_png": signature_data_url()},
        "conflicts.conflict_resolve_post": {"choice": "server"},
        "break_glass.patient_break_glass_post": {
            "reason": "unconscious, checking allergies",
            "code": pyotp.TOTP(user.totp_secret).now() if user.totp_secret else ""},
        "break_glass.admin_break_glass_review_post": {"disposition": "justified",
                                                      "note": "Seen in the emergency room."},
        "admin.users_post": {"username": unique("new.person"), "display_name": "New person",
                             "clinic_id": records.clinic_id, "role": r.LAB},
        "admin.user_memberships_post": {"clinic_id": records.clinic_id, "role": r.LAB},
        "admin.clinics_post": {"name": "Clinic C", "code": unique("C").upper()},
        "admin.clinic_teams_post": {"name": unique("Team ")},
    }
    return {"mid": new_id(), **signed_in.get(endpoint, {})}


def prepare(endpoint: str, client, user: User) -> dict:
    """Put the client where the endpoint expects it; returns form fields that depend on it.

    The second steps of signing in need a password already checked (a pending sign-in).
    """
    if not endpoint.startswith(("auth.login_code", "auth.login_setup")):
        return {}
    extra, setup_secret = {}, None
    if endpoint.startswith("auth.login_setup"):
        user.totp_secret = None  # a first sign-in: no code app yet
        db.session.commit()
        setup_secret = pyotp.random_base32()
        extra["code"] = pyotp.TOTP(setup_secret).now()
    elif endpoint == "auth.login_code_post":
        extra["code"] = pyotp.TOTP(user.totp_secret).now()
    with client.session_transaction() as sess:
        sess["pending_mfa"] = {"user_id": user.id, "at": time.time(), "next": "/"}
        if setup_secret:
            sess["setup_secret"] = setup_secret
    return extra


def outcome(response, method: str) -> str:
    location = response.headers.get("Location") or response.headers.get("HX-Redirect") or ""
    redirected = response.status_code in REDIRECTS or "HX-Redirect" in response.headers
    if redirected and urlsplit(location).path == "/login":
        return LOGIN
    if response.status_code == 403:
        return DENIED
    if response.status_code == 401:
        return UNAUTHENTICATED
    if method == "GET" and (response.status_code == 200 or redirected):
        return OK
    if method != "GET" and response.status_code not in (401, 403, 404, 405) \
            and response.status_code < 500:
        return OK
    return f"{response.status_code} {location}".strip()


def test_every_route_has_an_entry_in_the_matrix(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    missing = sorted(endpoints - set(MATRIX))
    assert not missing, ("These endpoints have no entry in tests/web/access_matrix.py; add one "
                         "saying who may use them: " + ", ".join(missing))


def test_every_entry_names_everyone_with_a_known_outcome():
    for endpoint, expected in MATRIX.items():
        assert set(expected) == set(WHO), endpoint
        assert set(expected.values()) <= {OK, DENIED, LOGIN, UNAUTHENTICATED}, endpoint


@pytest.mark.parametrize("endpoint", sorted(MATRIX))
def test_access(endpoint, app, world, write, register, client_for):
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint == endpoint]
    assert rules, f"{endpoint} is in tests/web/access_matrix.py but the app has no such route"
    spare = world.user(r.REGISTRATION_CLERK, "B")  # whose sign-in an anonymous visitor uses
    shared = Records(world, write, register)
    adapter = app.url_map.bind("localhost")
    wrong = []
    for rule in rules:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for who in WHO:
                # Reads share one set of records; each write gets its own.
                records = shared if method == "GET" else Records(world, write, register)
                unknown = sorted(a for a in rule.arguments if not hasattr(Records, a))
                assert not unknown, f"{rule.rule}: no record for URL parameter(s) {unknown}"
                url = adapter.build(endpoint, {a: getattr(records, a) for a in rule.arguments},
                                    method=method)
                user = spare if who == ANONYMOUS else world.user(who, "A")
                client = app.test_client() if who == ANONYMOUS else client_for(user)
                extra = prepare(endpoint, client, user)
                if method == "GET":
                    response = client.get(url)
                else:
                    response = client.open(url, method=method,
                                           data={**form_for(endpoint, records, user), **extra})
                got = outcome(response, method)
                if got != MATRIX[endpoint][who]:
                    wrong.append(f"{method} {url} as {who}: expected {MATRIX[endpoint][who]}, "
                                 f"got {got}")
    assert not wrong, "\n".join(wrong)
