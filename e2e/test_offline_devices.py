"""Several devices of one clinic: concurrent edits meet on the server, and handoffs arrive live.

Runs in Hilltop (the second demo clinic).
"""

from __future__ import annotations

import json
import time

from playwright.sync_api import expect

from e2e.helpers import server_db
from e2e.offline import (device, expect_synced, go_offline, go_online, open_from_device, register,
                         unique_family)

CLINIC = 1  # Hilltop


def _edit(page, live_server, patient_id: str, **fields) -> None:
    page.goto(f"{live_server.url}/patients/{patient_id}/edit")
    for label, value in fields.items():
        page.get_by_label(label.capitalize()).fill(value)
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{live_server.url}/patients/{patient_id}")


def test_concurrent_phone_edits_converge_and_the_conflict_waits_for_review(new_context, live_server):
    offline_ctx, offline = device(new_context, live_server, live_server.user("registration_clerk", CLINIC))
    online_ctx, online = device(new_context, live_server, live_server.user("nurse", CLINIC))

    family = unique_family("Conflict")
    patient_id = register(online, live_server, "Zawadi", family, phone="+254 722 000 001")
    expect_synced(online)
    # The other device learns of the patient from the server before it goes offline.
    open_from_device(offline, f"{live_server.url}/patients/{patient_id}")
    expect(offline.locator("#demographics")).to_contain_text("+254 722 000 001")

    go_offline(offline_ctx)
    _edit(offline, live_server, patient_id, phone="+254 733 111 111")
    expect(offline.locator("#demographics")).to_contain_text("+254 733 111 111")

    _edit(online, live_server, patient_id, phone="+254 744 222 222", address="Plot 9, Hill Road")
    expect_synced(online)

    go_online(offline_ctx, offline)
    expect_synced(offline)
    online.evaluate("navigator.serviceWorker.controller.postMessage({type: 'sync'})")
    expect_synced(online)

    # Both devices show the same record: the server kept the online value, with the address.
    for page in (offline, online):
        page.goto(f"{live_server.url}/patients/{patient_id}")
        details = page.locator("#demographics")
        expect(details).to_contain_text("+254 744 222 222")
        expect(details).to_contain_text("Plot 9, Hill Road")

    with server_db(live_server) as db:
        row = db.execute("SELECT phone, address FROM patient WHERE id = ?", (patient_id,)).fetchone()
        assert (row["phone"], row["address"]) == ("+254 744 222 222", "Plot 9, Hill Road")
        conflicts = db.execute("SELECT fields, server_values, incoming_values, resolved_at FROM conflict "
                               "WHERE entity_id = ?", (patient_id,)).fetchall()
        assert len(conflicts) == 1
        assert json.loads(conflicts[0]["fields"]) == ["phone"]
        assert json.loads(conflicts[0]["incoming_values"]) == {"phone": "+254 733 111 111"}
        assert conflicts[0]["resolved_at"] is None

    # The device that made the change shows it met another, with both values.
    offline.goto(f"{live_server.url}/device")
    met = offline.locator("#conflicts article.conflict")
    expect(met).to_have_count(1)
    expect(met.locator("td.yours")).to_have_text("+254 733 111 111")
    expect(met.locator("td.kept")).to_have_text("+254 744 222 222")

    # The value that was not merged waits on the review list, both values shown.
    online.goto(f"{live_server.url}/conflicts")
    review = online.locator("main")
    expect(review).to_contain_text(family)
    expect(review).to_contain_text("+254 733 111 111")
    expect(review).to_contain_text("+254 744 222 222")


def test_a_patient_sent_to_triage_shows_on_the_triage_worklist_within_3_seconds(new_context, live_server):
    _, clerk = device(new_context, live_server, live_server.user("registration_clerk", CLINIC))
    _, nurse = device(new_context, live_server, live_server.user("nurse", CLINIC))
    nurse.goto(f"{live_server.url}/worklist/triage")
    nurse.evaluate("window.__marker = 1")

    family = unique_family("Handoff")
    patient_id = register(clerk, live_server, "Baraka", family)
    card = clerk.locator("#visit")
    card.get_by_label("Start at").select_option("registration")
    card.get_by_role("button", name="Start visit").click()
    expect(card).to_contain_text("At Registration")
    expect_synced(clerk)
    clerk.goto(f"{live_server.url}/worklist/registration")
    entry = clerk.locator("#worklist li.visit", has_text=family)
    expect(entry).to_be_visible()

    entry.get_by_role("button", name="Triage", exact=True).click()
    sent_at = time.monotonic()
    expect(nurse.locator("#worklist li.visit", has_text=family)).to_be_visible(timeout=3000)
    arrived = time.monotonic() - sent_at
    assert arrived < 3.0, f"the handoff took {arrived:.1f} s"
    assert nurse.evaluate("window.__marker") == 1, "the worklist page was reloaded"

    with server_db(live_server) as db:
        visits = db.execute("SELECT station FROM visit WHERE patient_id = ?", (patient_id,)).fetchall()
        assert [v["station"] for v in visits] == ["triage"]


def test_search_on_a_device_follows_a_name_changed_on_another(new_context, live_server):
    searching_ctx, searching = device(new_context, live_server, live_server.user("registration_clerk", CLINIC))
    editing_ctx, editing = device(new_context, live_server, live_server.user("nurse", CLINIC))

    before, after = unique_family("Before"), unique_family("After")
    patient_id = register(editing, live_server, "Imani", before)
    expect_synced(editing)
    open_from_device(searching, f"{live_server.url}/patients/{patient_id}")

    # The searching device has read its patients for a search before the change arrives.
    go_offline(searching_ctx)
    searching.goto(f"{live_server.url}/patients?q={before}")
    expect(searching.locator("ul.results")).to_contain_text(f"{before}, Imani")

    editing.goto(f"{live_server.url}/patients/{patient_id}/edit")
    editing.get_by_label("Family name").fill(after)
    editing.get_by_role("button", name="Save").click()
    editing.wait_for_url(f"{live_server.url}/patients/{patient_id}")
    expect_synced(editing)

    go_online(searching_ctx, searching)
    deadline = time.monotonic() + 20
    while True:  # until the change has reached the device: its chart shows the new name
        searching.evaluate("navigator.serviceWorker.controller.postMessage({type: 'sync'})")
        open_from_device(searching, f"{live_server.url}/patients/{patient_id}")
        if after in searching.locator("#demographics").inner_text():
            break
        assert time.monotonic() < deadline, "the renamed patient did not reach the device"
        searching.wait_for_timeout(500)
    go_offline(searching_ctx)
    searching.goto(f"{live_server.url}/patients?q={after}")
    expect(searching.locator("ul.results")).to_contain_text(f"{after}, Imani")
    searching.goto(f"{live_server.url}/patients?q={before}")
    expect(searching.locator("main")).to_contain_text(f"No patient in this clinic matches “{before}”")
