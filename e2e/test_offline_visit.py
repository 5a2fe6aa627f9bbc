"""A whole visit recorded with no network, then sent to the server in order, once.

Riverside's nurse works on a tablet that has done its first sync: the service worker renders
every page from the device and queues every write; nothing reaches the server until the
network is back, and then everything does, in the order it was made.
"""

from __future__ import annotations

import json

from playwright.sync_api import expect

from e2e.helpers import audit_db, server_db
from e2e.offline import (badge, device, expect_synced, go_offline, go_online, register,
                         unique_family)

CLINIC = 0  # Riverside


def test_offline_visit_is_shown_at_once_and_applied_in_order_once(new_context, live_server):
    context, page = device(new_context, live_server, live_server.user("nurse", CLINIC))
    go_offline(context)

    family = unique_family("Offline")
    patient_id = register(page, live_server, "Neema", family)
    expect(page.get_by_role("status")).to_have_text(f"Neema {family} is registered.")
    expect(page.locator("#demographics .pending-mark")).to_be_visible()

    visit = page.locator("#visit")
    visit.get_by_label("Reason").fill("fever for two days")
    visit.get_by_label("Start at").select_option("triage")
    visit.get_by_role("button", name="Start visit").click()
    expect(page.get_by_role("status")).to_have_text("Visit started at Triage.")
    expect(page.locator("#visit")).to_contain_text("At Triage")
    expect(page.locator("#visit .pending-mark")).to_be_visible()

    page.locator("#vitals").get_by_role("link", name="Record vitals").click()
    page.get_by_label("Temperature").fill("38.4")
    page.get_by_label("Heart rate").fill("96")
    page.get_by_role("button", name="Save readings").click()
    expect(page.get_by_role("status")).to_have_text("2 readings recorded.")
    temperature = page.locator("#vitals tr[data-code='8310-5']")
    expect(temperature).to_contain_text("38.4")
    expect(temperature.locator(".pending-mark")).to_be_visible()

    page.locator("#notes").get_by_role("link", name="Write note").click()
    page.get_by_label("Note").fill("Febrile, alert. Encourage fluids.")
    page.get_by_role("button", name="Save as draft").click()
    expect(page.get_by_role("status")).to_have_text("Note saved as a draft.")
    expect(page.locator("#notes")).to_contain_text("Encourage fluids")
    expect(page.locator("#notes .pending-mark")).to_be_visible()

    expect(badge(page)).to_have_attribute("data-state", "offline")
    expect(badge(page)).to_contain_text("5 changes")
    with server_db(live_server) as db:
        assert db.execute("SELECT count(*) FROM patient WHERE id = ?", (patient_id,)).fetchone()[0] == 0

    go_online(context, page)
    expect_synced(page)
    page.reload()
    expect(page.locator(".pending-mark")).to_have_count(0)
    expect(page.locator("#notes")).to_contain_text("Encourage fluids")

    with server_db(live_server) as db:
        patient = db.execute("SELECT family_name FROM patient WHERE id = ?", (patient_id,)).fetchone()
        assert patient["family_name"] == family
        visits = db.execute("SELECT id, station, reason FROM visit WHERE patient_id = ?",
                            (patient_id,)).fetchall()
        assert [(v["station"], v["reason"]) for v in visits] == [("triage", "fever for two days")]
        readings = db.execute("SELECT code, value_number, visit_id FROM observation "
                              "WHERE patient_id = ? ORDER BY code", (patient_id,)).fetchall()
        assert [(r["code"], r["value_number"], r["visit_id"]) for r in readings] == [
            ("8310-5", 38.4, visits[0]["id"]), ("8867-4", 96.0, visits[0]["id"])]
        notes = db.execute("SELECT opened('note', 'text', id, text) AS text, status FROM note "
                           "WHERE patient_id = ?", (patient_id,)).fetchall()
        assert [(n["text"], n["status"]) for n in notes] == [("Febrile, alert. Encourage fluids.", "draft")]

        # One device, its writes in the order they were made, each applied once.
        client_id = db.execute("SELECT origin_client_id FROM change_log WHERE entity = 'patient' "
                               "AND entity_id = ? AND version = 1", (patient_id,)).fetchone()[0]
        results = db.execute("SELECT client_id, seq, mid, type, status, source FROM mutation_result "
                             "WHERE client_id = ? ORDER BY seq", (client_id,)).fetchall()
        assert [r["type"] for r in results] == ["patient.register", "visit.start", "observation.record",
                                                "observation.record", "note.write"]
        assert {r["source"] for r in results} == {"sync"}
        seqs = [r["seq"] for r in results]
        assert seqs == list(range(seqs[0], seqs[0] + 5))
        assert len({r["mid"] for r in results}) == 5
        assert {r["status"] for r in results} == {"applied"}
        order = [row["entity"] for row in db.execute(
            "SELECT entity FROM change_log WHERE origin_client_id = ? ORDER BY seq",
            (client_id,))]
        assert order.index("patient") < order.index("visit") < order.index("observation") < order.index("note")

    # The chart was shown from the device, offline: the audit log has those reads too.
    with audit_db(live_server) as audit:
        reads = audit.execute("SELECT detail FROM audit_event WHERE action = 'patient.read' AND patient_id = ?",
                              (patient_id,)).fetchall()
    assert sum(json.loads(r["detail"]).get("source") == "device" for r in reads) >= 4
