"""The installed app: same pages as the server, opens offline, honest about what needs the server.

Riverside staff. The worker renders pages from the device with the same templates as the
server; these tests hold the two renders together on real charts, and check what a person sees
when the network is gone.
"""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import expect

from e2e.helpers import server_db, sign_in
from e2e.offline import (badge, device, expect_synced, go_offline, go_online, open_from_device,
                         launch_profile, remember_sign_in, signed_in_state, unique_family,
                         wait_until_ready)

CLINIC = 0  # Riverside
# Tokens made fresh for each render: the CSRF token is masked anew each time, and each page
# gets its own mutation-id token for its forms. A page's digest (`?since=`) is each side's own:
# the server and the worker need only agree with themselves.
VOLATILE = [
    (re.compile(r'(name="csrf-token" content=")[^"]*'), r"\1…"),
    (re.compile(r'(name="csrf_token" value=")[^"]*'), r"\1…"),
    (re.compile(r'(name="mid" value=")[^"]*'), r"\1…"),
    (re.compile(r'(\?since=)[0-9a-f]*'), r"\1…"),
]


def _normalised(html: str) -> str:
    for pattern, replacement in VOLATILE:
        html = pattern.sub(replacement, html)
    return html


def test_the_worker_renders_the_same_chart_as_the_server(new_context, live_server):
    context, page = device(new_context, live_server, live_server.user("clinician", CLINIC))
    refused = []  # anything the pages' Content-Security-Policy had to block
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{live_server.url}/patients?q=a")
    hrefs = [a.get_attribute("href") for a in page.locator("ul.results a").all()]
    with server_db(live_server) as db:
        # Of the patients on this device, those with the most on their charts.
        richest = sorted(hrefs, key=lambda href: -db.execute(
            "SELECT (SELECT count(*) FROM observation WHERE patient_id = :p) "
            "+ (SELECT count(*) FROM note WHERE patient_id = :p) "
            "+ (SELECT count(*) FROM visit WHERE patient_id = :p)",
            {"p": href.rsplit("/", 1)[1]}).fetchone()[0])
    rows = [{"id": href.rsplit("/", 1)[1]} for href in richest[:4]]
    compared = 0
    for row in rows:
        url = f"{live_server.url}/patients/{row['id']}"
        open_from_device(page, url)
        worker = page.goto(url)
        assert worker.headers.get("x-rendered-by") == "service-worker"
        server = context.request.get(url)  # the API client goes past the service worker
        assert server.ok and "x-rendered-by" not in server.headers
        worker_html, server_html = _normalised(worker.text()), _normalised(server.text())
        assert "Vital signs" in server_html
        assert worker_html == server_html, _first_difference(server_html, worker_html)
        assert worker.headers.get("content-security-policy") == server.headers["content-security-policy"]
        compared += 1
    assert compared == 4
    page.locator("#vitals").get_by_role("link", name="Record vitals").click()
    page.get_by_role("button", name="Save readings").click()  # htmx, the worker, a form error
    expect(page.locator(".flash-error, .field-error").first).to_be_visible()
    assert refused == []


def _first_difference(expected: str, actual: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
    return f"server: …{expected[max(0, at - 200):at + 200]!r}\nworker: …{actual[max(0, at - 200):at + 200]!r}"


def test_installable_and_opens_offline_from_the_home_screen(browser, live_server, tmp_path):
    # Installing needs a real profile (never an incognito one), signed in as the lab tech.
    user = live_server.user("lab", CLINIC)
    state = signed_in_state(browser, live_server, user)
    context = launch_profile(browser, tmp_path / "profile", state)
    try:
        page = context.new_page()
        page.goto(live_server.url + "/")
        wait_until_ready(page, user)
        _installs_and_opens_offline(context, page, live_server)
    finally:
        context.close()


def _installs_and_opens_offline(context, page, live_server):
    manifest = context.request.get(f"{live_server.url}/manifest.webmanifest").json()
    assert manifest["display"] == "standalone" and manifest["start_url"] == "/"
    cdp = context.new_cdp_session(page)
    errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    assert errors == [], errors

    go_offline(context)
    answer = page.goto(live_server.url + manifest["start_url"])
    assert answer.headers.get("x-rendered-by") == "service-worker"
    expect(page).to_have_url(f"{live_server.url}/worklist/lab")
    expect(page.get_by_role("heading", level=1)).to_have_text("Lab")
    expect(badge(page)).to_have_attribute("data-state", "offline")

    # Storage: the device asked to keep its data, and says whether the browser agreed.
    page.goto(f"{live_server.url}/device")
    persisted = page.evaluate("navigator.storage.persisted()")
    expect(page.locator("[data-persisted]")).to_have_attribute("data-persisted", "yes" if persisted else "no")
    expect(page.locator("[data-storage]")).to_contain_text("MB used of")


def test_signing_out_with_unsent_changes_warns_and_keeps_them(new_context, live_server):
    user = live_server.user("lab", CLINIC)
    context, page = device(new_context, live_server, user)
    page.goto(f"{live_server.url}/patients?q=a")
    href = page.locator("ul.results a").first.get_attribute("href")
    patient_id = href.rsplit("/", 1)[1]
    open_from_device(page, live_server.url + href)

    go_offline(context)
    page.goto(f"{live_server.url}/patients/{patient_id}/vitals")
    page.get_by_label("Height").fill("171.5")
    page.get_by_role("button", name="Save readings").click()
    expect(badge(page)).to_contain_text("1 change")

    warnings = []
    page.once("dialog", lambda dialog: (warnings.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert warnings and "1 change has not been sent" in warnings[0]
    assert "stay on this device" in warnings[0]

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("body")).to_contain_text("needs a connection")

    # Back online, the sign-out reaches the server before anything else: the session is over.
    go_online(context, page)
    page.goto(live_server.url + "/")
    expect(page).to_have_url(re.compile(r"/login"))

    # The change was kept: once this person is signed in here again, it is sent.
    sign_in(page, live_server, user)
    remember_sign_in(context, user)
    expect_synced(page)
    with server_db(live_server) as db:
        heights = db.execute("SELECT count(*) FROM observation WHERE patient_id = ? AND code = '8302-2' "
                             "AND value_number = 171.5", (patient_id,)).fetchone()[0]
    assert heights == 1


def test_dispensing_needs_a_connection_and_says_so(new_context, live_server):
    with server_db(live_server) as db:
        order = db.execute("SELECT m.id, m.patient_id FROM medication_request m JOIN patient p ON p.id = m.patient_id "
                           "JOIN clinic c ON c.id = p.clinic_id WHERE m.status = 'active' "
                           "AND c.name LIKE 'Riverside%' LIMIT 1").fetchone()
        assert order is not None, "the demo data has no active medication order at Riverside"
        dispensed_before = db.execute("SELECT count(*) FROM medication_dispense WHERE request_id = ?",
                                      (order["id"],)).fetchone()[0]
    context, page = device(new_context, live_server, live_server.user("pharmacist", CLINIC))
    open_from_device(page, f"{live_server.url}/patients/{order['patient_id']}")

    go_offline(context)
    page.locator("#medications form", has=page.locator(f"#qty-{order['id']}")).get_by_role("button", name="Dispense").click()
    expect(page.locator("main")).to_contain_text("This action needs a connection to the server")
    expect(page.locator("main")).to_contain_text("Nothing was saved")
    go_online(context, page)
    expect_synced(page)
    with server_db(live_server) as db:
        after = db.execute("SELECT count(*) FROM medication_dispense WHERE request_id = ?", (order["id"],)).fetchone()[0]
    assert after == dispensed_before


def test_a_patient_not_on_the_device_is_found_on_the_server_when_online(new_context, live_server):
    context, page = device(new_context, live_server, live_server.user("clinician", CLINIC))
    family = unique_family("Longago")
    with server_db(live_server) as db:
        # Registered here years ago and not seen since: outside every device's subset.
        clinic = db.execute("SELECT id, organization_id FROM clinic WHERE name LIKE 'Riverside%'").fetchone()
        db.execute("INSERT INTO patient (id, version, given_name, family_name, sex, birth_date, clinic_id, "
                   "organization_id, created_at, updated_at) VALUES (?, 1, 'Wanjiru', ?, 'female', "
                   "'1950-01-01', ?, ?, '2019-03-01 09:00:00', '2019-03-01 09:00:00')",
                   (str(uuid.uuid4()), family, clinic["id"], clinic["organization_id"]))
        db.commit()

    answer = page.goto(f"{live_server.url}/patients?q={family}")
    assert answer.headers.get("x-rendered-by") != "service-worker"
    expect(page.locator("ul.results")).to_contain_text(f"{family}, Wanjiru")

    go_offline(context)
    page.goto(f"{live_server.url}/patients?q={family}")
    expect(page.locator("main")).to_contain_text(f"No patient in this clinic matches “{family}”")
