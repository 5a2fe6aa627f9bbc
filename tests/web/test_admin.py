"""The administration console: users, roles, clinics and teams, as administrators use it."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.domain import roles as r
from app.extensions import db
from app.domain.ids import new_id
from app.models import AuditEvent, Clinic, Membership, Organization, Team, User
from app.models.types import utcnow
from app.services import audit as audit_service
from tests.conftest import PASSWORD

pytestmark = pytest.mark.postgres


def _events(action: str, outcome: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
    if outcome:
        query = query.where(AuditEvent.outcome == outcome)
    events = list(db.session.execute(query).scalars())
    for event in events:
        db.session.expunge(event)
    # The audit database takes its write lock for any transaction on SQLite, and the test
    # shares its session with the app: end the read so the next request can audit.
    db.session.rollback()
    return events


def _shown_password(html: str) -> str | None:
    found = re.search(r'id="temporary-password".*?<code>([^<]+)</code>', html, re.S)
    return found.group(1) if found else None


def _user(username: str) -> User | None:
    db.session.expire_all()
    return db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()


def _memberships(user: User) -> set[tuple[str, str]]:
    db.session.expire_all()
    return set(tuple(row) for row in db.session.execute(select(Membership.clinic_id, Membership.role)
                                  .where(Membership.user_id == user.id)).all())


def _sign_in_step(app, username: str, password: str):
    """The password step of /login, as a fresh browser does it."""
    return app.test_client().post("/login", data={"username": username, "password": password})


def _membership_id(user: User, role: str) -> str:
    return db.session.execute(select(Membership.id).where(
        Membership.user_id == user.id, Membership.role == role)).scalar_one()


# --- Creating users ----------------------------------------------------------------------


def test_org_admin_creates_user_whose_temporary_password_signs_in(app, world, client_for):
    admin = client_for(world.user(r.ORG_ADMIN))
    form_page = admin.get("/admin/users/new")
    assert form_page.status_code == 200 and 'name="username"' in form_page.text

    answer = admin.post("/admin/users", data={
        "username": "Grace.Wanjiru", "display_name": "Grace  Wanjiru",
        "clinic_id": world.clinics["B"].id, "role": r.NURSE})
    assert answer.status_code == 303
    created = _user("grace.wanjiru")
    assert created is not None and created.display_name == "Grace Wanjiru"
    assert answer.headers["Location"] == f"/admin/users/{created.id}"

    page = admin.get(answer.headers["Location"])
    password = _shown_password(page.text)
    assert password and "shown only this once" in page.text
    assert "is ready" in page.text and "Nurse</strong> at Clinic B" in page.text
    again = admin.get(answer.headers["Location"])
    assert _shown_password(again.text) is None and password not in again.text

    listing = admin.get("/admin/users")
    assert "Grace Wanjiru" in listing.text and "Code app not set up" in listing.text

    # The person signs in: the password works, and they are sent to set up a code app.
    sign_in = _sign_in_step(app, "Grace.Wanjiru", password)
    assert sign_in.status_code == 302 and sign_in.headers["Location"] == "/login/setup"

    [event] = _events("admin.user.create")
    assert event.outcome == "success" and event.username == world.user(r.ORG_ADMIN).username
    assert event.detail["user_id"] == created.id and event.detail["role"] == r.NURSE
    assert password not in str(event.detail)


def test_username_clash_and_bad_input_are_field_errors(world, client_for):
    admin = client_for(world.user(r.ORG_ADMIN))
    users_before = db.session.scalar(select(func.count()).select_from(User))

    clash = admin.post("/admin/users", data={
        "username": "NURSE.A", "display_name": "Another Nurse",
        "clinic_id": world.clinics["A"].id, "role": r.NURSE})
    assert clash.status_code == 422
    assert "This username is already taken. Choose another one." in clash.text
    assert 'value="Another Nurse"' in clash.text  # what they typed is kept

    bad = admin.post("/admin/users", data={"username": "has space", "display_name": "",
                                           "clinic_id": "not-a-clinic", "role": "wizard"})
    assert bad.status_code == 422
    assert "no spaces" in bad.text and "Enter the person&#39;s name." in bad.text
    assert "Choose one of the clinics listed." in bad.text
    assert "Choose one of the roles listed." in bad.text

    assert db.session.scalar(select(func.count()).select_from(User)) == users_before
    assert {e.outcome for e in _events("admin.user.create")} == {"rejected"}


# --- Scope: clinic administrators -----------------------------------------------------------


def test_clinic_admin_cannot_see_or_manage_someone_only_in_another_clinic(world, client_for):
    admin = client_for(world.user(r.CLINIC_ADMIN, "A"))
    outsider = world.user(r.NURSE, "B")
    listing = admin.get("/admin/users")
    assert world.user(r.NURSE, "A").display_name in listing.text
    assert outsider.display_name not in listing.text and "Clinic B" not in listing.text

    assert admin.get(f"/admin/users/{outsider.id}").status_code == 404
    for action in ("disable", "enable", "reset-mfa", "password"):
        assert admin.post(f"/admin/users/{outsider.id}/{action}").status_code == 404, action
    add = admin.post(f"/admin/users/{outsider.id}/memberships",
                     data={"clinic_id": world.clinics["A"].id, "role": r.NURSE})
    assert add.status_code == 404
    remove = admin.post(f"/admin/memberships/{_membership_id(outsider, r.NURSE)}/delete")
    assert remove.status_code == 404
    team = admin.post(f"/admin/clinics/{world.clinics['B'].id}/teams", data={"name": "Night"})
    assert team.status_code == 404

    outsider = _user(outsider.username)
    assert not outsider.is_disabled and outsider.totp_secret
    assert _memberships(outsider) == {(world.clinics["B"].id, r.NURSE)}
    assert db.session.scalar(select(func.count()).select_from(Team)) == 0
    assert "Clinic B" not in admin.get("/admin/clinics").text
    denied = _events("admin.user.read", "denied") + _events("admin.user.disable", "denied")
    assert len(denied) == 2 and denied[0].detail["user_id"] == outsider.id


def test_clinic_admin_cannot_grant_or_remove_org_admin(world, client_for):
    admin = client_for(world.user(r.CLINIC_ADMIN, "A"))
    nurse = world.user(r.NURSE, "A")
    page = admin.get(f"/admin/users/{nurse.id}")
    assert "Clinic administrator" in page.text and "Organization administrator" not in page.text

    grant = admin.post(f"/admin/users/{nurse.id}/memberships",
                       data={"clinic_id": world.clinics["A"].id, "role": r.ORG_ADMIN})
    assert grant.status_code == 403
    assert _memberships(nurse) == {(world.clinics["A"].id, r.NURSE)}

    create = admin.post("/admin/users", data={"username": "sneaky", "display_name": "Sneaky",
                                              "clinic_id": world.clinics["A"].id,
                                              "role": r.ORG_ADMIN})
    assert create.status_code == 403 and _user("sneaky") is None

    org_admin = world.user(r.ORG_ADMIN, "A")  # holds org_admin at clinic A
    remove = admin.post(f"/admin/memberships/{_membership_id(org_admin, r.ORG_ADMIN)}/delete")
    assert remove.status_code == 403
    assert _memberships(org_admin) == {(world.clinics["A"].id, r.ORG_ADMIN)}
    assert [e.outcome for e in _events("admin.membership.add")] == ["denied"]
    assert [e.outcome for e in _events("admin.membership.remove")] == ["denied"]


def test_clinic_admin_cannot_take_over_accounts_that_reach_beyond_their_clinic(world, client_for):
    admin = client_for(world.user(r.CLINIC_ADMIN, "A"))
    org_admin = world.user(r.ORG_ADMIN, "A")
    page = admin.get(f"/admin/users/{org_admin.id}")
    assert page.status_code == 200
    assert "Only an organization administrator can disable this account" in page.text
    assert admin.post(f"/admin/users/{org_admin.id}/password").status_code == 403
    assert admin.post(f"/admin/users/{org_admin.id}/reset-mfa").status_code == 403
    assert admin.post(f"/admin/users/{org_admin.id}/disable").status_code == 403

    # A nurse who also works at clinic B: clinic A's administrator adds roles at A only.
    org = client_for(world.user(r.ORG_ADMIN, "A"))
    shared = world.user(r.NURSE, "B")
    assert org.post(f"/admin/users/{shared.id}/memberships",
                    data={"clinic_id": world.clinics["A"].id, "role": r.LAB}).status_code == 303
    page = admin.get(f"/admin/users/{shared.id}")
    assert page.status_code == 200 and "Lab</strong> at Clinic A" in page.text
    assert "Clinic B" not in page.text
    assert admin.post(f"/admin/users/{shared.id}/password").status_code == 403
    assert admin.post(f"/admin/users/{shared.id}/memberships",
                      data={"clinic_id": world.clinics["B"].id, "role": r.LAB}).status_code == 422
    assert _user(shared.username).password_hash == shared.password_hash


def test_clinic_admin_manages_people_and_teams_of_their_clinic(world, client_for):
    admin = client_for(world.user(r.CLINIC_ADMIN, "A"))
    team = admin.post(f"/admin/clinics/{world.clinics['A'].id}/teams", data={"name": "Outreach"})
    assert team.status_code == 303
    assert "The team Outreach is added to Clinic A." in admin.get("/admin/clinics").text

    created = admin.post("/admin/users", data={
        "username": "baraka", "display_name": "Baraka Otieno",
        "clinic_id": world.clinics["A"].id, "role": r.REGISTRATION_CLERK,
        "team_id": db.session.execute(select(Team.id)).scalar_one()})
    assert created.status_code == 303
    baraka = _user("baraka")
    assert "Registration clerk</strong> at Clinic A · team Outreach" in admin.get(
        f"/admin/users/{baraka.id}").text

    clinic = admin.post("/admin/clinics", data={"name": "Lakeside", "code": "LAK"})
    assert clinic.status_code == 403
    assert db.session.scalar(select(func.count()).select_from(Clinic)) == 2
    assert "Add a clinic" not in admin.get("/admin/clinics").text


# --- Account actions -----------------------------------------------------------------------


def test_disabling_a_user_ends_their_session_at_once(app, world, client_for):
    nurse = world.user(r.NURSE, "A")
    nurse_browser = client_for(nurse)
    assert nurse_browser.get("/patients").status_code == 200
    admin = client_for(world.user(r.CLINIC_ADMIN, "A"))
    assert "On 1 device" in admin.get(f"/admin/users/{nurse.id}").text

    answer = admin.post(f"/admin/users/{nurse.id}/disable")
    assert answer.status_code == 303
    page = admin.get(answer.headers["Location"])
    assert "is disabled and was signed out everywhere" in page.text
    assert "Disabled" in page.text and "Not signed in" in page.text

    next_request = nurse_browser.get("/patients")
    assert next_request.status_code == 302
    assert next_request.headers["Location"].startswith("/login")
    assert _sign_in_step(app, nurse.username, PASSWORD).status_code == 401

    [event] = _events("admin.user.disable")
    assert event.detail["sessions_ended"] == 1 and event.detail["user_id"] == nurse.id

    assert admin.post(f"/admin/users/{nurse.id}/enable").status_code == 303
    assert "can sign in again" in admin.get(f"/admin/users/{nurse.id}").text
    sign_in = _sign_in_step(app, nurse.username, PASSWORD)
    assert sign_in.status_code == 302 and sign_in.headers["Location"] == "/login/code"
    assert len(_events("admin.user.enable")) == 1


def test_reset_mfa_clears_the_code_app_and_signs_them_out(app, world, client_for):
    clinician = world.user(r.CLINICIAN, "A")
    browser = client_for(clinician)
    admin = client_for(world.user(r.ORG_ADMIN, "A"))
    answer = admin.post(f"/admin/users/{clinician.id}/reset-mfa")
    assert answer.status_code == 303
    assert "will be asked to set up a code app again" in admin.get(answer.headers["Location"]).text

    refreshed = _user(clinician.username)
    assert refreshed.totp_secret is None and refreshed.totp_last_step is None
    assert browser.get("/patients").status_code == 302
    sign_in = _sign_in_step(app, clinician.username, PASSWORD)
    assert sign_in.headers["Location"] == "/login/setup"
    assert _events("admin.user.reset_mfa")[0].detail["sessions_ended"] == 1


def test_new_temporary_password_replaces_the_old_and_unpauses_the_account(app, world, client_for):
    lab = world.user(r.LAB, "A")
    lab.locked_until = utcnow() + timedelta(minutes=10)
    lab.failed_sign_ins = 3
    db.session.commit()
    browser = client_for(lab)
    admin = client_for(world.user(r.CLINIC_ADMIN, "A"))
    assert "Paused after failed sign-ins" in admin.get(f"/admin/users/{lab.id}").text

    answer = admin.post(f"/admin/users/{lab.id}/password")
    assert answer.status_code == 303
    password = _shown_password(admin.get(answer.headers["Location"]).text)
    assert password
    assert _shown_password(admin.get(answer.headers["Location"]).text) is None

    assert browser.get("/patients").status_code == 302
    assert _sign_in_step(app, lab.username, PASSWORD).status_code == 401
    assert _sign_in_step(app, lab.username, password).headers["Location"] == "/login/code"
    [event] = _events("admin.user.password_reset")
    assert password not in str(event.detail)


def test_nobody_disables_themselves_or_removes_their_own_last_admin_role(world, client_for):
    me = world.user(r.ORG_ADMIN, "A")
    admin = client_for(me)
    page = admin.get(f"/admin/users/{me.id}")
    assert "Disable account" not in page.text and "This is your own account" in page.text

    answer = admin.post(f"/admin/users/{me.id}/disable")
    assert answer.status_code == 422
    assert "You cannot disable your own account." in answer.text
    assert admin.post(f"/admin/users/{me.id}/password").status_code == 422
    assert admin.post(f"/admin/users/{me.id}/reset-mfa").status_code == 422

    removal = admin.post(f"/admin/memberships/{_membership_id(me, r.ORG_ADMIN)}/delete")
    assert removal.status_code == 422
    assert "This is your last administrator role." in removal.text
    refreshed = _user(me.username)
    assert not refreshed.is_disabled and refreshed.totp_secret
    assert _memberships(refreshed) == {(world.clinics["A"].id, r.ORG_ADMIN)}
    assert {e.outcome for e in _events("admin.user.disable")} == {"rejected"}
    assert admin.get("/admin/users").status_code == 200  # still an administrator


# --- Memberships, clinics and teams --------------------------------------------------------


def test_org_admin_gives_and_removes_roles_at_any_clinic(world, client_for):
    admin = client_for(world.user(r.ORG_ADMIN, "A"))
    admin.post(f"/admin/clinics/{world.clinics['B'].id}/teams", data={"name": "Maternity"})
    team_id = db.session.execute(select(Team.id)).scalar_one()
    nurse = world.user(r.NURSE, "A")
    given = admin.post(f"/admin/users/{nurse.id}/memberships", data={
        "clinic_id": world.clinics["B"].id, "role": r.CLINICIAN, "team_id": team_id})
    assert given.status_code == 303
    assert "is now Clinician at Clinic B" in admin.get(given.headers["Location"]).text
    assert (world.clinics["B"].id, r.CLINICIAN) in _memberships(nurse)

    twice = admin.post(f"/admin/users/{nurse.id}/memberships", data={
        "clinic_id": world.clinics["B"].id, "role": r.CLINICIAN})
    assert twice.status_code == 422 and "They already have this role at this clinic." in twice.text
    wrong_team = admin.post(f"/admin/users/{nurse.id}/memberships", data={
        "clinic_id": world.clinics["A"].id, "role": r.LAB, "team_id": team_id})
    assert wrong_team.status_code == 422 and "That team is not at the chosen clinic." in wrong_team.text

    removed = admin.post(f"/admin/memberships/{_membership_id(nurse, r.CLINICIAN)}/delete")
    assert removed.status_code == 303
    assert "is no longer Clinician at Clinic B" in admin.get(removed.headers["Location"]).text
    assert _memberships(nurse) == {(world.clinics["A"].id, r.NURSE)}
    assert [e.outcome for e in _events("admin.membership.add")] == ["success", "rejected", "rejected"]
    assert [e.outcome for e in _events("admin.membership.remove")] == ["success"]


def test_org_admin_creates_clinics_and_teams(world, client_for):
    admin = client_for(world.user(r.ORG_ADMIN, "A"))
    answer = admin.post("/admin/clinics", data={"name": "Lakeside Clinic", "code": "lak"})
    assert answer.status_code == 303
    page = admin.get("/admin/clinics")
    assert "Lakeside Clinic" in page.text and ">LAK<" in page.text and "is created" in page.text

    clash = admin.post("/admin/clinics", data={"name": "Other", "code": "ta"})
    assert clash.status_code == 422
    assert "Another clinic already uses this code." in clash.text and 'value="Other"' in clash.text
    empty = admin.post("/admin/clinics", data={"name": "", "code": "has space"})
    assert empty.status_code == 422 and "Enter the clinic&#39;s name." in empty.text
    assert db.session.scalar(select(func.count()).select_from(Clinic)) == 3

    lakeside = db.session.execute(select(Clinic).where(Clinic.code == "LAK")).scalar_one()
    assert admin.post(f"/admin/clinics/{lakeside.id}/teams", data={"name": "Night"}).status_code == 303
    twice = admin.post(f"/admin/clinics/{lakeside.id}/teams", data={"name": "night"})
    assert twice.status_code == 422
    assert "This clinic already has a team with that name." in twice.text
    assert admin.post("/admin/clinics/not-a-clinic/teams", data={"name": "X"}).status_code == 404
    assert [e.outcome for e in _events("admin.clinic.create")] == ["success", "rejected", "rejected"]
    assert [e.outcome for e in _events("admin.team.create")] == ["success", "rejected", "denied"]


def test_another_organization_is_invisible_to_an_org_admin(world, client_for):
    other = Organization(id=new_id(), name="Other Health")
    clinic = Clinic(id=new_id(), organization_id=other.id, name="Far Clinic", code="FAR")
    stranger = User(id=new_id(), organization_id=other.id, username="far.admin",
                    display_name="Far Admin", password_hash=world.user(r.NURSE).password_hash)
    db.session.add_all([other, clinic, stranger])
    db.session.flush()
    db.session.add(Membership(id=new_id(), user_id=stranger.id, clinic_id=clinic.id,
                              role=r.ORG_ADMIN))
    db.session.commit()
    ours = client_for(world.user(r.ORG_ADMIN, "A"))
    ours.get(f"/admin/users/{world.user(r.NURSE, 'B').id}")
    theirs = client_for(stranger)

    assert "Nurse B" not in theirs.get("/admin/users").text
    assert "Clinic A" not in theirs.get("/admin/clinics").text
    assert theirs.get(f"/admin/users/{world.user(r.NURSE, 'A').id}").status_code == 404
    assert theirs.post(f"/admin/clinics/{world.clinics['A'].id}/teams",
                       data={"name": "Planted"}).status_code == 404
    assert theirs.post("/admin/users", data={"username": "planted", "display_name": "Planted",
                                             "clinic_id": world.clinics["A"].id,
                                             "role": r.NURSE}).status_code == 422
    assert _user("planted") is None
    # The audit log shows their own organization's events only.
    log = theirs.get("/admin/audit").text
    assert "far.admin" in log and world.user(r.ORG_ADMIN, "A").username not in log
    assert "far.admin" not in ours.get("/admin/audit").text


# --- Who may use the console ----------------------------------------------------------------


ADMIN_ROUTES = [
    ("get", "/admin/"), ("get", "/admin/audit"), ("get", "/admin/users"),
    ("get", "/admin/users/new"), ("post", "/admin/users"), ("get", "/admin/users/{user}"),
    ("post", "/admin/users/{user}/disable"), ("post", "/admin/users/{user}/enable"),
    ("post", "/admin/users/{user}/reset-mfa"), ("post", "/admin/users/{user}/password"),
    ("post", "/admin/users/{user}/memberships"), ("post", "/admin/memberships/{membership}/delete"),
    ("get", "/admin/clinics"), ("post", "/admin/clinics"), ("post", "/admin/clinics/{clinic}/teams"),
]


def _route(path: str, world) -> str:
    target = world.user(r.NURSE, "A")
    return path.format(user=target.id, membership=_membership_id(target, r.NURSE),
                       clinic=world.clinics["A"].id)


@pytest.mark.parametrize("role", sorted(r.CLINICAL_ROLES))
def test_clinical_roles_are_refused_every_admin_route(world, client_for, role):
    client = client_for(world.user(role, "A"))
    for method, path in ADMIN_ROUTES:
        answer = getattr(client, method)(_route(path, world), data={"name": "X", "role": r.NURSE})
        assert answer.status_code == 403, (method, path)
    nurse = _user(world.user(r.NURSE, "A").username)
    assert not nurse.is_disabled and nurse.totp_secret
    assert db.session.scalar(select(func.count()).select_from(Team)) == 0


def test_privacy_officer_sees_only_the_index_and_the_audit_log(world, client_for):
    client = client_for(world.user(r.PRIVACY_OFFICER, "A"))
    index = client.get("/admin/")
    assert index.status_code == 200 and "Audit log" in index.text
    assert "Users and roles" not in index.text and "Clinics and teams" not in index.text
    assert client.get("/admin/audit").status_code == 200
    for method, path in ADMIN_ROUTES[2:]:
        assert getattr(client, method)(_route(path, world)).status_code == 403, (method, path)


def test_admin_index_links_to_the_console(world, client_for):
    index = client_for(world.user(r.CLINIC_ADMIN, "A")).get("/admin/")
    for link in ('href="/admin/users"', 'href="/admin/clinics"', 'href="/admin/audit"'):
        assert link in index.text


def test_nothing_changes_when_the_audit_log_cannot_be_written(world, client_for, monkeypatch):
    nurse = world.user(r.NURSE, "A")
    admin = client_for(world.user(r.ORG_ADMIN, "A"))

    def broken(entries):
        raise audit_service.AuditUnavailable("disk full")
    monkeypatch.setattr(audit_service, "append", broken)
    answer = admin.post(f"/admin/users/{nurse.id}/disable")
    assert answer.status_code == 503 and "nothing was shown or changed" in answer.text
    assert not _user(nurse.username).is_disabled
    created = admin.post("/admin/users", data={"username": "ghost", "display_name": "Ghost",
                                               "clinic_id": world.clinics["A"].id,
                                               "role": r.NURSE})
    assert created.status_code == 503 and _user("ghost") is None
