"""A change the server refuses waits in quarantine on the device; the queue goes on.

Riverside's clinician books two appointments in the past while offline, then records vitals.
Back online, the server refuses both bookings (a past time) and applies the vitals after them.
The device shows why each was refused, with the reference the server logged; one is corrected
and sent again, the other is discarded, and the discard is in the server's audit log.
"""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from e2e.helpers import audit_db, server_db, sign_in
from e2e.offline import (badge, device, expect_synced, go_offline, go_online, open_from_device,
                         remember_sign_in)

CLINIC = 0  # Riverside
REFUSED = "The appointment time is in the past."


def _a_patient_on_the_device(page, live_server) -> str:
    page.goto(f"{live_server.url}/patients?q=a")
    href = page.locator("ul.results a").first.get_attribute("href")
    open_from_device(page, live_server.url + href)
    return href.rsplit("/", 1)[1]


def _request_appointment(page, live_server, patient_id: str, when: str, reason: str) -> None:
    page.goto(f"{live_server.url}/patients/{patient_id}/appointments")
    page.get_by_label("Date and time").fill(when)
    page.get_by_label("Reason").fill(reason)
    page.get_by_role("button", name="Book").click()
    expect(page.locator("#appointments")).to_contain_text(reason)


def test_refused_changes_wait_in_quarantine_and_later_ones_still_sync(new_context, live_server):
    context, page = device(new_context, live_server, live_server.user("clinician", CLINIC))
    patient_id = _a_patient_on_the_device(page, live_server)

    go_offline(context)
    _request_appointment(page, live_server, patient_id, "2020-01-06T09:00", "review one")
    expect(page.locator("#appointments")).to_contain_text("requested: the server confirms the slot")
    _request_appointment(page, live_server, patient_id, "2020-01-07T09:00", "review two")
    page.goto(f"{live_server.url}/patients/{patient_id}/vitals")
    page.get_by_label("Weight").fill("61.5")
    page.get_by_role("button", name="Save readings").click()
    expect(page.locator("#vitals tr[data-code='29463-7']")).to_contain_text("61.5")

    go_online(context, page)
    expect(badge(page)).to_have_attribute("data-state", "attention", timeout=20_000)
    expect(badge(page)).to_have_text("2 changes need attention")

    with server_db(live_server) as db:
        weights = db.execute("SELECT value_number FROM observation WHERE patient_id = ? AND code = '29463-7' "
                             "AND value_number = 61.5", (patient_id,)).fetchall()
        assert len(weights) == 1, "the change after the refused ones did not reach the server"
        booked = db.execute("SELECT reason FROM appointment WHERE patient_id = ? AND reason LIKE 'review %'",
                            (patient_id,)).fetchall()
        assert booked == []

    # The device says why, with the server's reference for each refusal.
    badge(page).click()
    expect(page).to_have_url(f"{live_server.url}/device")
    refused = page.locator("#quarantine article.quarantined")
    expect(refused).to_have_count(2)
    expect(refused.first).to_contain_text(REFUSED)
    references = [refused.nth(i).locator(".request-id").inner_text() for i in range(2)]
    with audit_db(live_server) as audit:
        for reference in references:
            events = audit.execute("SELECT action, outcome FROM audit_event WHERE request_id = ?",
                                   (reference,)).fetchall()
            assert ("mutation.appointment.book", "rejected") in [(e["action"], e["outcome"]) for e in events]

    # Corrected and sent again: the server books it.
    first = refused.filter(has=page.locator("input[value='review one']"))
    first.get_by_label("Starts at").fill("2030-01-07T09:00:00Z")
    first.get_by_role("button", name="Send again").click()
    expect(page.locator("#quarantine article.quarantined")).to_have_count(1)

    # Discarded: gone from the device, and the discard is audited.
    second = page.locator("#quarantine article.quarantined").filter(has=page.locator("input[value='review two']"))
    discarded_mid = second.get_attribute("data-mid")
    second.get_by_role("button", name="Discard this change").click()
    expect(page.locator("#quarantine article.quarantined")).to_have_count(0)
    expect_synced(page)

    with server_db(live_server) as db:
        booked = db.execute("SELECT reason, status, starts_at FROM appointment WHERE patient_id = ? "
                            "AND reason LIKE 'review %'", (patient_id,)).fetchall()
        assert [(b["reason"], b["status"]) for b in booked] == [("review one", "booked")]
    with audit_db(live_server) as audit:
        discards = audit.execute("SELECT detail FROM audit_event WHERE action = 'mutation.discarded'").fetchall()
        assert discarded_mid in [json.loads(d["detail"]).get("mid") for d in discards]


def test_an_ended_session_pauses_sending_and_keeps_everything_until_sign_in(new_context, live_server):
    user = live_server.user("clinician", 1)
    context, page = device(new_context, live_server, user)
    patient_id = _a_patient_on_the_device(page, live_server)

    go_offline(context)
    page.goto(f"{live_server.url}/patients/{patient_id}/vitals")
    page.get_by_label("Oxygen saturation").fill("97")
    page.get_by_role("button", name="Save readings").click()
    expect(badge(page)).to_contain_text("1 change")

    # Meanwhile the server ends every session of this person (an administrator, a timeout).
    with server_db(live_server) as db:
        db.execute("UPDATE user_session SET ended_at = CURRENT_TIMESTAMP WHERE user_id = "
                   "(SELECT id FROM user WHERE username = ?)", (user["username"],))
        db.commit()

    go_online(context, page)
    expect(badge(page)).to_have_text("Sign in again to send changes", timeout=20_000)
    # Nobody sees this person's patients until they sign in again; the change waits.
    page.goto(f"{live_server.url}/patients/{patient_id}")
    expect(page).to_have_url(re.compile(r"/login"))
    with server_db(live_server) as db:
        assert db.execute("SELECT count(*) FROM observation WHERE patient_id = ? AND code = '59408-5' "
                          "AND value_number = 97", (patient_id,)).fetchone()[0] == 0

    sign_in(page, live_server, user)
    remember_sign_in(context, user)
    expect_synced(page)
    with server_db(live_server) as db:
        assert db.execute("SELECT count(*) FROM observation WHERE patient_id = ? AND code = '59408-5' "
                          "AND value_number = 97", (patient_id,)).fetchone()[0] == 1
