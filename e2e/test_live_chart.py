"""A chart left open on one device shows what another device of the clinic records, by itself.

The clinician has a patient's chart open; the nurse, on her own tablet, records vital signs.
The clinician's chart must show them without anyone reloading it, and a refresh must never
throw away what the clinician is typing in one of the chart's forms.

Runs in Hilltop (the second demo clinic).
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from e2e.offline import (device, device_store, expect_synced, open_from_device, register,
                         unique_family)

CLINIC = 1  # Hilltop
LIVE_TIMEOUT_MS = 15_000  # a poke, a pull and a render; seconds at most even on a busy machine

# How each refresh of the chart ended: held back (by a listener of the page before this one)
# or swapped in. Only to know when to look at the form, whichever way it went.
WATCH_REFRESHES = """() => {
  window.__refresh = { held: 0, swapped: 0 };
  document.addEventListener("htmx:beforeRequest", (e) => {
    if (e.detail.requestConfig?.triggeringEvent?.type === "clinic:changed" && e.defaultPrevented) window.__refresh.held += 1;
  });
  document.addEventListener("htmx:afterSettle", () => { window.__refresh.swapped += 1; });
}"""
REFRESH_ENDED = "() => window.__refresh.held + window.__refresh.swapped > 0"


def record_vitals(page, live_server, patient_id: str, **readings) -> None:
    page.goto(f"{live_server.url}/patients/{patient_id}/vitals")
    for label, value in readings.items():
        page.get_by_label(label.replace("_", " ").capitalize()).fill(value)
    page.get_by_role("button", name="Save readings").click()
    expect(page.get_by_role("status")).to_have_text(f"{len(readings)} reading{'s' if len(readings) > 1 else ''} recorded.")
    expect(page).to_have_url(re.compile(rf"/patients/{patient_id}(#vitals)?$"))


def test_open_chart_shows_readings_recorded_on_another_device(new_context, live_server):
    _, nurse = device(new_context, live_server, live_server.user("nurse", CLINIC))
    _, clinician = device(new_context, live_server, live_server.user("clinician", CLINIC))

    patient_id = register(nurse, live_server, "Neema", unique_family("Live"))
    expect_synced(nurse)
    chart_url = f"{live_server.url}/patients/{patient_id}"
    open_from_device(clinician, chart_url)
    expect(clinician.locator("#vitals")).to_contain_text("No vital signs recorded yet.")
    # Survives htmx swaps, not a reload: tells whether the chart updated itself.
    clinician.evaluate("() => { window.__marker = 1; }")

    record_vitals(nurse, live_server, patient_id, heart_rate="97")
    heart_rate = clinician.locator('#vitals tr[data-code="8867-4"] td.value')
    expect(heart_rate).to_contain_text("97", timeout=LIVE_TIMEOUT_MS)
    assert clinician.evaluate("() => window.__marker") == 1, "the chart was reloaded"
    assert clinician.url == chart_url

    # The clinician starts adding an identifier; a reading arrives meanwhile.
    identifiers = clinician.locator("#identifiers")
    identifiers.get_by_label("Value").fill("HT-2291")
    clinician.evaluate(WATCH_REFRESHES)
    record_vitals(nurse, live_server, patient_id, temperature="38.4")
    clinician.wait_for_function(REFRESH_ENDED, timeout=LIVE_TIMEOUT_MS)
    expect(identifiers.get_by_label("Value")).to_have_value("HT-2291")

    # Sent, the chart shows both the identifier and the reading that came in meanwhile.
    identifiers.get_by_role("button", name="Add").click()
    expect(clinician.locator("#identifiers")).to_contain_text("HT-2291")
    expect(clinician.locator('#vitals tr[data-code="8310-5"] td.value')).to_contain_text("38.4")


# Each refresh of the chart a change in the clinic set off: the HTTP status it was answered with.
WATCH_ANSWERS = """() => {
  window.__answers = [];
  document.addEventListener("htmx:afterRequest", (e) => {
    if (e.detail.requestConfig?.triggeringEvent?.type === "clinic:changed") window.__answers.push(e.detail.xhr.status);
  });
  document.querySelector("#chart").dataset.drawn = "first";
}"""


def test_an_open_chart_is_drawn_again_only_when_its_patient_changed(new_context, live_server):
    _, nurse = device(new_context, live_server, live_server.user("nurse", CLINIC))
    _, clinician = device(new_context, live_server, live_server.user("clinician", CLINIC))
    patient_id = register(nurse, live_server, "Imani", unique_family("Still"))
    expect_synced(nurse)
    open_from_device(clinician, f"{live_server.url}/patients/{patient_id}")
    clinician.evaluate(WATCH_ANSWERS)

    # Another patient registered at the clinic: the chart asks, and is told nothing changed.
    other_id = register(nurse, live_server, "Baraka", unique_family("Else"))
    deadline = time.monotonic() + LIVE_TIMEOUT_MS / 1000
    while other_id not in (device_store(clinician) or {}).get("patients", []):
        assert time.monotonic() < deadline, "the other patient never reached the clinician's tablet"
        clinician.wait_for_timeout(200)
    clinician.wait_for_function("() => window.__answers.length > 0", timeout=LIVE_TIMEOUT_MS)
    clinician.wait_for_timeout(1000)  # any refresh still on its way
    assert set(clinician.evaluate("() => window.__answers")) == {204}
    assert clinician.evaluate("() => document.querySelector('#chart').dataset.drawn") == "first"

    # A reading for this patient: the chart is drawn again, with it.
    record_vitals(nurse, live_server, patient_id, heart_rate="91")
    heart_rate = clinician.locator('#vitals tr[data-code="8867-4"] td.value')
    expect(heart_rate).to_contain_text("91", timeout=LIVE_TIMEOUT_MS)
    assert clinician.evaluate("() => document.querySelector('#chart').dataset.drawn") is None
