"""Break-glass: a clinician of clinic A opens clinic B's patient with a reason and a fresh code,
for a limited time, every access tagged; the privacy officer reviews it."""
from __future__ import annotations

import re
import time
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import func, select

from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import (AuditEvent, BreakGlassGrant, Clinic, Membership, Observation,
                        Organization, User)
from app.models.types import utcnow
from tests.conftest import hashed_password, PASSWORD

pytestmark = pytest.mark.postgres

REASON = "unconscious on arrival, checking allergies"
NATIONAL_ID = "BG-4471-NID"
BANNER = re.compile(r"Emergency access until \d\d:\d\d — every view is recorded")


@pytest.fixture
def patient_b(world, register) -> str:
    """A patient of clinic B only: outside clinic A's scope."""
    return register(world.actor(r.REGISTRATION_CLERK, "B"), given_name="Wanjiru",
                    family_name="Kamau",
                    identifiers=[{"system": "national-id", "value": NATIONAL_ID}])


def code(user: User, steps_ahead: int = 0) -> str:
    """The user's code now, or the next one (a code is usable once)."""
    return pyotp.TOTP(user.totp_secret).at(time.time() + 30 * steps_ahead)


def wrong_code(user: User) -> str:
    valid = {code(user, n) for n in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def grants() -> list[BreakGlassGrant]:
    db.session.expire_all()
    rows = list(db.session.execute(select(BreakGlassGrant)).scalars())
    db.session.rollback()
    return rows


def events(**where) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id)
    for name, value in where.items():
        query = query.where(getattr(AuditEvent, name) == value)
    rows = list(db.session.execute(query).scalars())
    for row in rows:
        db.session.expunge(row)
    # On SQLite any audit-database transaction holds its write lock: end the read.
    db.session.rollback()
    return rows


def open_access(client, patient_id: str, user: User, steps_ahead: int = 0, reason: str = REASON):
    return client.post(f"/patients/{patient_id}/break-glass",
                       data={"reason": reason, "code": code(user, steps_ahead)})


def test_the_chart_refusal_offers_emergency_access_to_clinicians_only(world, client_for,
                                                                      patient_b):
    clinician = client_for(world.user(r.CLINICIAN, "A"))
    refused = clinician.get(f"/patients/{patient_b}")
    assert refused.status_code == 404
    assert f'action="/patients/{patient_b}/break-glass"' in refused.text
    assert "Kamau" not in refused.text
    # The same page for an id that is no patient at all: the offer tells nothing away.
    nobody = clinician.get(f"/patients/{new_id()}")
    assert nobody.status_code == 404 and "Open emergency access" in nobody.text

    nurse = client_for(world.user(r.NURSE, "A")).get(f"/patients/{patient_b}")
    assert nurse.status_code == 404 and "break-glass" not in nurse.text
    assert 'href="/break-glass"' in clinician.get("/patients").text  # the lookup, from the nav


def test_refused_without_a_reason_or_with_a_wrong_or_reused_code(world, client_for, register,
                                                                 patient_b):
    user = world.user(r.CLINICIAN, "A")
    client = client_for(user)
    no_reason = open_access(client, patient_b, user, reason="")
    assert no_reason.status_code == 403 and "Say in a few words" in no_reason.text
    too_short = open_access(client, patient_b, user, reason="emergency")
    assert too_short.status_code == 403 and "Say in a few words" in too_short.text
    wrong = client.post(f"/patients/{patient_b}/break-glass",
                        data={"reason": REASON, "code": wrong_code(user)})
    assert wrong.status_code == 403 and "That code is not right" in wrong.text
    assert REASON in wrong.text  # what was typed is kept for the next try
    assert grants() == []
    assert client.get(f"/patients/{patient_b}").status_code == 404
    assert [e.detail["problem"] for e in events(action="break_glass.open")] == \
        ["no_reason", "no_reason", "bad_code"]

    # A code opens one access; the same code again, for another patient, is refused.
    other_b = register(world.actor(r.REGISTRATION_CLERK, "B"), given_name="Other")
    assert open_access(client, patient_b, user).status_code == 303
    reused = open_access(client, other_b, user)
    assert reused.status_code == 403 and "already used" in reused.text
    assert [g.patient_id for g in grants()] == [patient_b]


def test_with_a_reason_and_a_fresh_code_the_record_opens_and_every_access_is_tagged(
        app, world, client_for, patient_b):
    user = world.user(r.CLINICIAN, "A")
    client = client_for(user)
    opened = open_access(client, patient_b, user)
    assert opened.status_code == 303 and opened.headers["Location"] == f"/patients/{patient_b}"
    [grant] = grants()
    assert grant.user_id == user.id and grant.clinic_id == world.clinics["A"].id
    assert grant.reason == REASON
    assert grant.expires_at - grant.started_at == timedelta(minutes=60)
    assert grant.review_due_at - grant.started_at == timedelta(hours=72)

    chart = client.get(f"/patients/{patient_b}")
    assert chart.status_code == 200 and "Kamau" in chart.text
    assert BANNER.search(chart.text)
    assert "Start visit" not in chart.text  # read only: no write forms
    history = client.get(f"/patients/{patient_b}/history")
    assert history.status_code == 200 and BANNER.search(history.text)
    write = client.post(f"/patients/{patient_b}/vitals", data={"heart_rate": "80"})
    assert write.status_code == 403 and "not change it" in write.text
    assert db.session.scalar(select(func.count()).select_from(Observation)) == 0

    # An open chart refreshing itself under the grant is a view too, recorded as the banner says.
    since = re.search(r'\?since=([0-9a-f]+)"', chart.text).group(1)
    refreshed = client.get(f"/patients/{patient_b}?since={since}", headers={"HX-Request": "true"})
    assert refreshed.status_code == 200 and "Kamau" in refreshed.text

    about = events(patient_id=patient_b, user_id=user.id)
    assert [e.action for e in about][:4] == ["break_glass.open", "patient.read", "patient.read",
                                             "patient.read"]
    assert {e.break_glass_id for e in about} == {grant.id}
    assert about[0].detail["reason"] == REASON
    # Somebody else's read of the patient in the same window is not theirs to carry.
    assert client_for(world.user(r.CLINICIAN, "B")).get(f"/patients/{patient_b}").status_code == 200
    assert events(patient_id=patient_b, username=world.user(r.CLINICIAN, "B").username)[-1] \
        .break_glass_id is None


def test_after_expiry_the_record_is_refused_again(world, client_for, patient_b):
    user = world.user(r.CLINICIAN, "A")
    client = client_for(user)
    assert open_access(client, patient_b, user).status_code == 303
    assert client.get(f"/patients/{patient_b}").status_code == 200
    grant = db.session.execute(select(BreakGlassGrant)).scalar_one()
    grant.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    again = client.get(f"/patients/{patient_b}")
    assert again.status_code == 404 and "Kamau" not in again.text
    assert not BANNER.search(again.text) and "Open emergency access" in again.text
    assert client.get(f"/patients/{patient_b}/history").status_code == 404


def test_the_lookup_by_identifier_finds_a_patient_across_the_organization(world, client_for,
                                                                         patient_b):
    user = world.user(r.CLINICIAN, "A")
    client = client_for(user)
    # Search shows clinic A's patients only, so the identifier finds nobody there.
    assert "Kamau" not in client.get("/patients", query_string={"q": NATIONAL_ID}).text
    unknown = client.post("/break-glass", data={"identifier": "NO-SUCH-ID", "reason": REASON,
                                                "code": code(user)})
    assert unknown.status_code == 404 and "No patient in your organization" in unknown.text
    found = client.post("/break-glass", data={"identifier": NATIONAL_ID.lower(),
                                              "reason": REASON, "code": code(user, 1)})
    assert found.status_code == 303 and found.headers["Location"] == f"/patients/{patient_b}"
    assert [g.patient_id for g in grants()] == [patient_b]
    assert events(action="break_glass.open", outcome="success")[0].detail["via"] == "identifier"


def test_other_roles_cannot_open_emergency_access(world, client_for, patient_b):
    for role in (r.NURSE, r.REGISTRATION_CLERK, r.PRIVACY_OFFICER, r.ORG_ADMIN):
        user = world.user(role, "A")
        answer = open_access(client_for(user), patient_b, user)
        assert answer.status_code == 403, role
    assert grants() == []


def _opened_grant(world, client_for, patient_id: str) -> BreakGlassGrant:
    user = world.user(r.CLINICIAN, "A")
    client = client_for(user)
    assert open_access(client, patient_id, user).status_code == 303
    assert client.get(f"/patients/{patient_id}").status_code == 200
    return grants()[-1]


def _section(html: str, section_id: str) -> str:
    found = re.search(rf'<section class="card" id="{section_id}">(.*?)</section>', html, re.S)
    return found.group(1) if found else ""


def test_the_privacy_officer_sees_it_at_once_and_records_a_disposition(world, client_for,
                                                                       patient_b):
    grant = _opened_grant(world, client_for, patient_b)
    officer = client_for(world.user(r.PRIVACY_OFFICER, "B"))
    index = officer.get("/admin/")
    assert "1 waiting for review" in index.text
    queue = officer.get("/admin/break-glass")
    waiting = _section(queue.text, "open-reviews")
    assert "Clinician A" in waiting and "Kamau, Wanjiru" in waiting and REASON in waiting
    assert re.search(r'<td class="accesses">1</td>', waiting)  # the one chart read
    assert f'href="/admin/break-glass/{grant.id}"' in waiting

    page = officer.get(f"/admin/break-glass/{grant.id}")
    assert page.status_code == 200
    assert "break_glass.open" in page.text and "patient.read" in page.text

    missing = officer.post(f"/admin/break-glass/{grant.id}/review",
                           data={"disposition": "justified", "note": ""})
    assert missing.status_code == 422 and "Write a short note" in missing.text
    done = officer.post(f"/admin/break-glass/{grant.id}/review",
                        data={"disposition": "not-justified", "note": "No emergency on record."})
    assert done.status_code == 303
    after = officer.get("/admin/break-glass").text
    assert "Kamau" not in _section(after, "open-reviews")
    assert "Not justified" in _section(after, "reviewed")
    assert "0 waiting for review" in officer.get("/admin/").text
    [review] = events(action="break_glass.review", outcome="success")
    assert review.break_glass_id == grant.id and review.detail["disposition"] == "not-justified"
    again = officer.post(f"/admin/break-glass/{grant.id}/review",
                         data={"disposition": "justified", "note": "Changed my mind."})
    assert again.status_code == 409 and grants()[0].disposition == "not-justified"


def test_reviews_past_their_due_time_are_listed_as_past_due(world, client_for, patient_b):
    grant = _opened_grant(world, client_for, patient_b)
    officer = client_for(world.user(r.PRIVACY_OFFICER, "A"))
    assert "Kamau" not in _section(officer.get("/admin/break-glass").text, "past-due")
    row = db.session.get(BreakGlassGrant, grant.id)
    row.review_due_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    queue = officer.get("/admin/break-glass").text
    assert "Kamau" in _section(queue, "past-due") and "Past due" in _section(queue, "past-due")
    assert "Kamau" not in _section(queue, "open-reviews")
    assert "1 past due" in officer.get("/admin/").text


def test_other_roles_cannot_review(world, client_for, patient_b):
    grant = _opened_grant(world, client_for, patient_b)
    for role in (r.CLINICIAN, r.NURSE, r.CLINIC_ADMIN, r.ORG_ADMIN):
        client = client_for(world.user(role, "A"))
        assert client.get("/admin/break-glass").status_code == 403, role
        answer = client.post(f"/admin/break-glass/{grant.id}/review",
                             data={"disposition": "justified", "note": "Fine."})
        assert answer.status_code == 403, role
    assert grants()[0].reviewed_at is None


def test_another_organizations_privacy_officer_cannot_see_or_review_it(world, client_for,
                                                                       patient_b):
    grant = _opened_grant(world, client_for, patient_b)
    org = Organization(id=new_id(), name="Elsewhere Health")
    clinic = Clinic(id=new_id(), organization_id=org.id, name="Elsewhere", code="EX1")
    officer = User(id=new_id(), organization_id=org.id, username="privacy.elsewhere",
                   display_name="Privacy Elsewhere", password_hash=hashed_password(PASSWORD),
                   totp_secret=pyotp.random_base32())
    db.session.add_all([org, clinic, officer])
    db.session.flush()
    db.session.add(Membership(id=new_id(), user_id=officer.id, clinic_id=clinic.id,
                              role=r.PRIVACY_OFFICER))
    db.session.commit()
    client = client_for(officer)
    queue = client.get("/admin/break-glass")
    assert queue.status_code == 200 and "Kamau" not in queue.text and grant.id not in queue.text
    assert "0 waiting for review" in client.get("/admin/").text
    assert client.get(f"/admin/break-glass/{grant.id}").status_code == 404
    answer = client.post(f"/admin/break-glass/{grant.id}/review",
                         data={"disposition": "justified", "note": "Fine."})
    assert answer.status_code == 404 and grants()[0].reviewed_at is None
