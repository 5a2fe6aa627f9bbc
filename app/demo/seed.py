"""Build the demo organization: 2 clinics, a user per role in each, patients with histories.

Clinical data goes through apply(), like any other write, so the demo also shows
history, change log and audit as real use leaves them.
"""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

import pyotp
from sqlalchemy import select

from app.demo.signature import signature_data_url
from app.demo.names import FAMILY_NAMES, FEMALE_NAMES, MALE_NAMES, MEDICATIONS, PROBLEMS, VILLAGES
from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import Clinic, Membership, Organization, Team, User
from app.models.records import to_json_value
from app.services import audit
from app.services.accounts import hash_password
from app.services.actor import Actor
from app.services.apply import apply
from app.services.results import Mutation

DEMO_ORG = "Demo Health"
CLINICS = (("Riverside Clinic", "RIV"), ("Hilltop Clinic", "HIL"))
ROLE_USERNAMES = {
    r.REGISTRATION_CLERK: "clerk", r.NURSE: "nurse", r.CLINICIAN: "clinician",
    r.PHARMACIST: "pharmacist", r.LAB: "lab", r.CLINIC_ADMIN: "admin",
    r.ORG_ADMIN: "orgadmin", r.PRIVACY_OFFICER: "privacy",
}
PERSON_NAMES = {
    r.REGISTRATION_CLERK: "Rose Mutua", r.NURSE: "Grace Njeri", r.CLINICIAN: "Dr. Samuel Otieno",
    r.PHARMACIST: "Peter Kamau", r.LAB: "Lucy Achieng", r.CLINIC_ADMIN: "Alice Wanjiru",
    r.ORG_ADMIN: "Joseph Mwangi", r.PRIVACY_OFFICER: "Esther Chebet",
}


def demo_password(username: str) -> str:
    # Demo only (refused in production): readable, so a trainer can hand them out.
    return f"demo-{username}"


def ensure_demo(patient_count: int, progress=None) -> list[dict]:
    org = db.session.execute(select(Organization).where(Organization.name == DEMO_ORG)).scalar_one_or_none()
    if org is None:
        org, clinics, users = _create_people()
        db.session.commit()
        _create_patients(clinics, users, patient_count, progress)
    return demo_users(org)


def demo_users(org: Organization) -> list[dict]:
    rows = db.session.execute(
        select(User, Membership, Clinic).join(Membership, Membership.user_id == User.id)
        .join(Clinic, Clinic.id == Membership.clinic_id)
        .where(User.organization_id == org.id).order_by(Clinic.code.desc(), User.username)).all()
    return [{"username": u.username, "password": demo_password(u.username),
             "totp_secret": u.totp_secret, "role": m.role, "clinic": c.name, "clinic_id": c.id}
            for u, m, c in rows]


def _create_people():
    org = Organization(id=new_id(), name=DEMO_ORG)
    db.session.add(org)
    clinics, users = [], {}
    for name, code in CLINICS:
        clinic = Clinic(id=new_id(), organization_id=org.id, name=name, code=code)
        team = Team(id=new_id(), clinic_id=clinic.id, name="Outpatients")
        db.session.add_all([clinic, team])
        clinics.append(clinic)
        for role, short in ROLE_USERNAMES.items():
            username = f"{short}.{code.lower()}"
            user = User(id=new_id(), organization_id=org.id, username=username,
                        display_name=PERSON_NAMES[role], password_hash=hash_password(demo_password(username)),
                        totp_secret=pyotp.random_base32())
            db.session.add(user)
            db.session.flush()
            db.session.add(Membership(id=new_id(), user_id=user.id, clinic_id=clinic.id,
                                      team_id=team.id, role=role))
            users[(clinic.id, role)] = user
    db.session.flush()
    return org, clinics, users


class _Writer:
    """Applies demo mutations as a given user and collects their audit entries."""

    def __init__(self, users: dict, clinic: Clinic):
        self.users, self.clinic, self.entries = users, clinic, []

    def __call__(self, role: str, type_name: str, entity: str, data: dict, entity_id: str | None = None,
                 base_version: int | None = None):
        user = self.users[(self.clinic.id, role)]
        actor = Actor(user_id=user.id, username=user.username, organization_id=user.organization_id,
                      clinic_id=self.clinic.id, roles=frozenset({role}))
        mutation = Mutation(mid=new_id(), type=type_name, entity=entity,
                            entity_id=entity_id or new_id(), data=data, base_version=base_version)
        result = apply(mutation, actor, source="seed")
        if result.status != "applied":
            raise RuntimeError(f"demo write {type_name} was {result.status}: {result.error}")
        self.entries.append(audit.AuditEntry(
            action=f"mutation.{type_name}", user_id=user.id, username=user.username, role=role,
            clinic_id=self.clinic.id, patient_id=data.get("patient_id") or (
                mutation.entity_id if entity == "patient" else None),
            detail={"mid": mutation.mid, "source": "demo seed"}))
        return result


def _iso(moment: datetime) -> str:
    return to_json_value(moment)


def _create_patients(clinics: list[Clinic], users: dict, count: int, progress) -> None:
    rng = random.Random(20261121)  # nosec B311: demo data repeats on every run; nothing secret is drawn
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    today_stations = ["registration", "triage", "triage", "consultation", "lab", "pharmacy"]
    for n in range(count):
        clinic = clinics[n % len(clinics)]
        write = _Writer(users, clinic)
        sex = rng.choice(["female", "male"])
        given = rng.choice(FEMALE_NAMES if sex == "female" else MALE_NAMES)
        birth = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 84))
        patient = write(r.REGISTRATION_CLERK, "patient.register", "patient", {
            "given_name": given, "family_name": rng.choice(FAMILY_NAMES), "sex": sex,
            "birth_date": birth.isoformat(), "clinic_id": clinic.id,
            "phone": f"07{rng.randrange(10, 99)} {rng.randrange(100, 999)} {rng.randrange(100, 999)}",
            "address": f"{rng.choice(VILLAGES)}, plot {rng.randrange(1, 400)}",
            "identifiers": [{"system": "mrn", "value": f"{clinic.code}-{10000 + n}"}]
            + ([{"system": "national-id", "value": str(20_000_000 + n * 7)}] if rng.random() < 0.6 else []),
        })
        pid = patient.entity_id
        for past in range(rng.randrange(1, 4)):
            _past_visit(write, rng, pid, clinic, now - timedelta(days=rng.randrange(20, 700)))
        if rng.random() < 0.35:
            _open_visit(write, rng, pid, clinic, rng.choice(today_stations))
        if rng.random() < 0.3:
            slot = now + timedelta(days=rng.randrange(1, 30), hours=rng.randrange(0, 8))
            write(r.REGISTRATION_CLERK, "appointment.book", "appointment", {
                "patient_id": pid, "starts_at": _iso(slot.replace(minute=rng.choice([0, 30]))),
                "reason": rng.choice(["Follow-up", "Review results", "Antenatal check", "Refill"])})
        if rng.random() < 0.25:
            write(r.REGISTRATION_CLERK, "consent.record", "consent", {
                "patient_id": pid, "scope": "treatment", "signer_name": f"{given}",
                "signer_relation": "self", "signature_png": DEMO_SIGNATURE})
        audit.append(write.entries)
        db.session.commit()
        if progress and ((n + 1) % 50 == 0 or n + 1 == count):
            progress(n + 1, count)


def _vitals(write, rng, pid, visit_id, at: datetime) -> None:
    readings = [("8867-4", rng.randrange(60, 110), "/min"), ("8310-5", round(rng.uniform(36.2, 38.6), 1), "Cel"),
                ("8480-6", rng.randrange(100, 165), "mm[Hg]"), ("8462-4", rng.randrange(60, 100), "mm[Hg]"),
                ("59408-5", rng.randrange(92, 100), "%"), ("29463-7", round(rng.uniform(45, 95), 1), "kg")]
    for code, value, unit in readings:
        write(r.NURSE, "observation.record", "observation", {
            "patient_id": pid, "visit_id": visit_id, "code": code, "value": value, "unit": unit,
            "effective_at": _iso(at)})


def _past_visit(write, rng, pid, clinic, at: datetime) -> None:
    visit = write(r.REGISTRATION_CLERK, "visit.start", "visit", {
        "patient_id": pid, "clinic_id": clinic.id, "station": "triage",
        "reason": rng.choice(["Fever", "Cough", "Headache", "Follow-up", "Abdominal pain", "Check-up"])})
    vid = visit.entity_id
    _vitals(write, rng, pid, vid, at)
    if rng.random() < 0.6:
        problem, code = rng.choice(PROBLEMS)
        condition = write(r.CLINICIAN, "condition.add", "condition", {
            "patient_id": pid, "visit_id": vid, "text": problem, "code": code})
        if rng.random() < 0.5:
            write(r.CLINICIAN, "condition.resolve", "condition", {}, entity_id=condition.entity_id,
                  base_version=condition.version)
    note = write(r.CLINICIAN, "note.write", "note", {
        "patient_id": pid, "visit_id": vid,
        "text": rng.choice(["Seen and examined. Plan discussed with patient.",
                            "Improving. Continue current treatment, review in two weeks.",
                            "Advised fluids and rest. Return if symptoms worsen."])})
    write(r.CLINICIAN, "note.sign", "note", {}, entity_id=note.entity_id, base_version=note.version)
    if rng.random() < 0.5:
        medication, dose, frequency = rng.choice(MEDICATIONS)
        quantity = rng.choice([10, 14, 20, 30])
        order = write(r.CLINICIAN, "medication.order", "medication_request", {
            "patient_id": pid, "visit_id": vid, "medication": medication, "dose": dose,
            "route": "oral", "frequency": frequency, "quantity": quantity, "duration_days": 7})
        write(r.PHARMACIST, "medication.dispense", "medication_dispense", {
            "request_id": order.entity_id, "quantity": quantity if rng.random() < 0.8 else quantity // 2})
    moved = write(r.CLINICIAN, "visit.move", "visit", {"station": "done"}, entity_id=vid,
                  base_version=visit.version)
    if moved.status != "applied":  # an assert would vanish under python -O
        raise RuntimeError(f"demo visit could not be finished: {moved.status}")


def _open_visit(write, rng, pid, clinic, station: str) -> None:
    visit = write(r.REGISTRATION_CLERK, "visit.start", "visit", {
        "patient_id": pid, "clinic_id": clinic.id, "station": "registration",
        "reason": rng.choice(["Fever", "Cough", "Follow-up", "Antenatal visit", "Wound dressing"])})
    version = visit.version
    if station != "registration":
        moved = write(r.REGISTRATION_CLERK, "visit.move", "visit", {"station": station},
                      entity_id=visit.entity_id, base_version=version)
        version = moved.version
    if station in ("consultation", "lab", "pharmacy"):
        _vitals(write, rng, pid, visit.entity_id, datetime.now(timezone.utc))


DEMO_SIGNATURE = signature_data_url()
