"""Faults in the middle of work: the server dies, the browser reloads or closes mid-flush, a new
version of the app is deployed with writes queued, the first sync is cut short.

Each test ends by checking what the server holds (its own database), not only what the page
says: every write applied exactly once, each device's writes in the order it made them.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import urllib.request

import pytest
from playwright.sync_api import Error as PlaywrightError, expect

from e2e.gate import Gate
from e2e.helpers import audit_db, server_db
from e2e.offline import (badge, device, device_store, expect_synced, go_offline, go_online,
                         launch_profile, open_from_device, queue_notes, signed_in_state,
                         unique_family, unlock_when_asked, wait_until_ready)

RIVERSIDE, HILLTOP = 0, 1
DRAIN_BOUND_S = 40


# -- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def profile(tmp_path):
    """A browser profile directory that outlives one launch of the browser; removed after."""
    path = tmp_path / "profile"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def is_push(request) -> bool:
    return request.method == "POST" and request.url.endswith("/sync/v1/push")


def is_pull(request) -> bool:
    return request.method == "POST" and request.url.endswith("/sync/v1/pull")


def first_page(context):
    return context.pages[0] if context.pages else context.new_page()


def record_vitals(page, **readings: str) -> None:
    """From a chart, through the vitals form (field name=value)."""
    page.locator("#vitals").get_by_role("link", name="Record vitals").click()
    page.wait_for_url(re.compile(r"/vitals$"))
    form = page.locator("form[action$='/vitals']")
    for field, value in readings.items():
        form.locator(f"input[name={field}]").fill(value)
    form.get_by_role("button", name="Save readings").click()
    page.wait_for_url(re.compile(r"/patients/[0-9a-f-]{36}(#vitals)?$"))


def write_note(page, text: str) -> None:
    """From a chart, through the note form, as a draft; back on the chart with it shown."""
    page.locator("#notes").get_by_role("link", name="Write note").click()
    page.wait_for_url(re.compile(r"/notes$"))
    page.get_by_label("Note").fill(text)
    page.get_by_role("button", name="Save as draft").click()
    expect(page.get_by_role("status")).to_have_text("Note saved as a draft.")
    expect(page.locator("#notes")).to_contain_text(text)


def served_worker_version(live_server) -> str:
    """The version the server stamps into /sw.js now."""
    with urllib.request.urlopen(live_server.url + "/sw.js", timeout=10) as answer:
        source = answer.read().decode()
    found = re.search(r'const VERSION = "([0-9a-f]+)"', source)
    assert found, "no VERSION in /sw.js"
    return found.group(1)


# Asks the worker that controls the page for its status; only its own answer counts. A new
# worker controls the page from the start of its activation, before its `activate` handler has
# run (deleting the old caches, for one): until it is "activated" it does not count.
_CONTROLLER_VERSION = """() => new Promise((resolve) => {
  const workers = navigator.serviceWorker;
  const controller = workers.controller;
  if (!controller || controller.state !== "activated") return resolve(null);
  const heard = (event) => {
    if (event.source !== controller || !event.data || event.data.type !== "status") return;
    workers.removeEventListener("message", heard);
    resolve(event.data.status.version);
  };
  workers.addEventListener("message", heard);
  controller.postMessage({ type: "status" });
  setTimeout(() => resolve(null), 2000);
})"""


def _unless_navigating(page, script: str):
    """The script's answer; None when the page was navigating as it was asked."""
    try:
        return page.evaluate(script)
    except PlaywrightError as error:
        if "Execution context was destroyed" not in str(error):
            raise
        page.wait_for_load_state()
        return None


def controller_version(page) -> str | None:
    """The version of the activated worker that controls the page (None: none yet)."""
    return _unless_navigating(page, _CONTROLLER_VERSION)


_REGISTRATION_STATE = """() => navigator.serviceWorker.getRegistration().then((r) => r && ({
  installing: r.installing && r.installing.state, waiting: r.waiting && r.waiting.state,
  active: r.active && r.active.state,
  controller: navigator.serviceWorker.controller && navigator.serviceWorker.controller.state,
}))"""


def registration_state(page) -> dict | None:
    """Where each of the page's workers is in its life."""
    return _unless_navigating(page, _REGISTRATION_STATE)


def nothing_waiting(page) -> bool:
    """No worker of the page's registration is installing or waiting to take over."""
    state = registration_state(page)
    return bool(state) and state["installing"] is None and state["waiting"] is None


def client_results(db, client_id: str) -> list:
    return db.execute("SELECT mid, seq, type, status FROM mutation_result WHERE client_id = ? "
                      "ORDER BY seq", (client_id,)).fetchall()


def client_changes(db, client_id: str) -> list:
    """The change log rows this device's writes made, in log (commit) order."""
    return db.execute("SELECT seq, entity, entity_id, version, origin_seq FROM change_log "
                      "WHERE origin_client_id = ? ORDER BY seq", (client_id,)).fetchall()


def note_counts(db, texts: list[str]) -> dict[str, int]:
    counts = {text: 0 for text in texts}
    for row in db.execute("SELECT opened('note', 'text', id, text) AS text FROM note"):
        if row["text"] in counts:
            counts[row["text"]] += 1
    return counts


def assert_applied_once_in_order(db, client_id: str, count: int) -> list:
    """The device's first `count` seqs, each applied once, contiguous, and logged in seq order."""
    results = client_results(db, client_id)
    assert [r["seq"] for r in results] == list(range(1, count + 1))
    assert {r["status"] for r in results} == {"applied"}, [dict(r) for r in results
                                                           if r["status"] != "applied"]
    assert len({r["mid"] for r in results}) == count
    changes = [c for c in client_changes(db, client_id) if c["version"] == 1]
    assert [c["origin_seq"] for c in changes] == list(range(1, count + 1)), \
        "each write logged once, in the order the device made it"
    last_seq = db.execute("SELECT last_seq FROM sync_client WHERE client_id = ?",
                          (client_id,)).fetchone()[0]
    assert last_seq == count
    return changes


# -- b. the server is killed while staff keep working ------------------------------------------

def test_writes_made_while_the_server_is_down_are_sent_by_themselves_once_in_order(new_context,
                                                                                   live_server):
    context, page = device(new_context, live_server, live_server.user("lab", RIVERSIDE))
    store = device_store(page)
    client_id, patient_id = store["client_id"], store["patients"][0]
    chart = f"{live_server.url}/patients/{patient_id}"
    tag = unique_family("Down")
    notes = [f"{tag} first note, server down", f"{tag} second note, server down"]

    live_server.stop(signal.SIGKILL)
    try:
        # The device renders every page and queues every write while the server is gone.
        open_from_device(page, chart)
        record_vitals(page, temperature="37.9", heart_rate="88")
        expect(page.get_by_role("status")).to_have_text("2 readings recorded.")
        write_note(page, notes[0])
        record_vitals(page, heart_rate="91")
        expect(page.get_by_role("status")).to_have_text("1 reading recorded.")
        write_note(page, notes[1])

        expect(badge(page)).to_have_attribute("data-state", "offline")
        expect(badge(page)).to_contain_text("5 changes")
        assert device_store(page)["outbox"] == 5
        with server_db(live_server) as db:
            assert client_results(db, client_id) == []
        page.evaluate("window.__not_reloaded = true")
    finally:
        live_server.start()

    # Nobody touches the device: its own retry (or the live stream reconnecting, or its timer)
    # sends the queue.
    back_at = time.monotonic()
    expect_synced(page, timeout=DRAIN_BOUND_S * 1000)
    print(f"queue drained {time.monotonic() - back_at:.1f} s after the server came back")
    assert page.evaluate("window.__not_reloaded === true"), "the page was reloaded"
    assert device_store(page)["outbox"] == 0

    with server_db(live_server) as db:
        results = client_results(db, client_id)
        assert [r["type"] for r in results] == ["observation.record", "observation.record",
                                                "note.write", "observation.record", "note.write"]
        changes = assert_applied_once_in_order(db, client_id, 5)
        assert [c["entity"] for c in changes] == ["observation", "observation", "note",
                                                  "observation", "note"]
        written = []
        for change in changes:
            if change["entity"] == "note":
                written.append(db.execute("SELECT opened('note', 'text', id, text) AS text FROM note WHERE id = ?",
                                          (change["entity_id"],)).fetchone()["text"])
            else:
                row = db.execute("SELECT code, value_number, patient_id FROM observation WHERE id = ?",
                                 (change["entity_id"],)).fetchone()
                assert row["patient_id"] == patient_id
                written.append((row["code"], row["value_number"]))
        # One form's readings in the form's order (heart rate first), then the later writes.
        assert written == [("8867-4", 88.0), ("8310-5", 37.9), notes[0], ("8867-4", 91.0), notes[1]]
        assert note_counts(db, notes) == {text: 1 for text in notes}


# -- c. a reload, then the whole browser closing, in the middle of a flush ---------------------

def test_a_flush_cut_by_a_reload_or_by_closing_the_browser_sends_everything_once(browser,
                                                                               live_server,
                                                                               profile):
    user = live_server.user("clinician", RIVERSIDE)
    state = signed_in_state(browser, live_server, user)
    context = launch_profile(browser, profile, state)
    try:
        page = first_page(context)
        page.goto(live_server.url + "/")
        wait_until_ready(page, user)
        store = device_store(page)
        client_id, patient_id = store["client_id"], store["patients"][0]
        open_from_device(page, f"{live_server.url}/patients/{patient_id}")
        tag = unique_family("Flush")

        # 1. Reload the page the moment the flush starts.
        go_offline(context)
        reloaded = [f"{tag} reload {i:03}" for i in range(60)]
        queue_notes(page, patient_id, reloaded)
        with context.expect_event("request", predicate=is_push):
            go_online(context, page)
        page.reload()
        expect_synced(page)
        with server_db(live_server) as db:
            assert note_counts(db, reloaded) == {text: 1 for text in reloaded}
            assert_applied_once_in_order(db, client_id, len(reloaded))

        # 2. Close the whole browser while the second of two push batches (100 + 50) is on
        # its way: the server may apply it, but the device never hears the answer.
        go_offline(context)
        closed = [f"{tag} close {i:03}" for i in range(150)]
        queue_notes(page, patient_id, closed)
        pushes = []

        def second_push(request):
            if is_push(request):
                pushes.append(request)
            return len(pushes) >= 2

        with context.expect_event("request", predicate=second_push, timeout=20_000):
            go_online(context, page)
    finally:
        context.close()
    with server_db(live_server) as db:
        at_close = len(client_results(db, client_id))
    print(f"the server held {at_close} of {len(reloaded) + len(closed)} when the browser closed")

    # The person opens the browser again (the session cookie did not survive the restart:
    # they sign in again, here by getting the same session's cookie back).
    context = launch_profile(browser, profile, state)
    try:
        # Hold the worker back until we have seen what the device kept.
        context.route("**/sync/v1/**", lambda route: route.abort())
        page = first_page(context)
        page.goto(live_server.url + "/")
        store = device_store(page)
        assert store["client_id"] == client_id
        assert store["outbox"] > 0, "the browser closed after the flush ended: nothing was tested"
        context.unroute("**/sync/v1/**")
        go_online(context, page)
        unlock_when_asked(page, user)  # the restart locked the device
        expect_synced(page)
        assert device_store(page)["outbox"] == 0
    finally:
        context.close()

    every = reloaded + closed
    with server_db(live_server) as db:
        assert note_counts(db, every) == {text: 1 for text in every}
        changes = assert_applied_once_in_order(db, client_id, len(every))
        texts = [db.execute("SELECT opened('note', 'text', id, text) AS text FROM note WHERE id = ?", (c["entity_id"],)).fetchone()["text"]
                 for c in changes]
        assert texts == every


# -- g. a new version of the app is deployed while the outbox holds writes ---------------------

@pytest.fixture
def gate(live_server):
    """The live server behind a proxy that can hold the sync endpoints back."""
    proxy = Gate(live_server)
    yield proxy
    proxy.close()


def test_a_new_version_deployed_with_writes_queued_sends_them_once(new_context, gate):
    context, page = device(new_context, gate, gate.user("lab", HILLTOP))
    store = device_store(page)
    client_id, patient_id = store["client_id"], store["patients"][0]
    open_from_device(page, f"{gate.url}/patients/{patient_id}")
    old_version = served_worker_version(gate)
    assert controller_version(page) == old_version

    go_offline(context)
    tag = unique_family("Release")
    texts = [f"{tag} written in the old version"]
    write_note(page, texts[0])
    more = [f"{tag} queued {i}" for i in range(4)]
    queue_notes(page, patient_id, more)
    texts += more
    assert device_store(page)["outbox"] == 5

    with gate.restarted_with(APP_RELEASE="test-release-2"):
        new_version = served_worker_version(gate)
        assert new_version != old_version

        # The old worker must not send the queue first: sync answers fail until the new one
        # controls the page, so it is the new version that finds and sends the old outbox.
        gate.hold("/sync/v1/push", "/sync/v1/pull")
        go_online(context, page)
        # Installing fetches the whole shell again, which can fail or take a while; a browser
        # then checks again at the next navigation, so the test asks again every 10 s.
        deadline = time.monotonic() + 60
        asked = 0.0
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: frame == page.main_frame and navigations.append(frame.url))
        # While a new worker waits, the old one is not asked anything: Chromium activates the
        # new one only once the old one has no event in hand, and every question is an event.
        while not (nothing_waiting(page) and controller_version(page) == new_version):
            assert time.monotonic() < deadline, \
                f"the new worker never took over the page: {registration_state(page)}; " \
                f"the page went to {navigations}"
            if time.monotonic() - asked > 10:
                page.evaluate("() => navigator.serviceWorker.getRegistration().then((r) => r.update()).then(() => true, () => false)")
                asked = time.monotonic()
            page.wait_for_timeout(200)
        assert device_store(page)["outbox"] == 5
        with server_db(gate) as db:
            assert client_results(db, client_id) == []

        sent_before = len(gate.pushed_by)
        gate.release()
        go_online(context, page)
        expect_synced(page)
        assert device_store(page)["outbox"] == 0
        pushed_by = gate.pushed_by[sent_before:]
        assert pushed_by and set(pushed_by) == {new_version}

        with server_db(gate) as db:
            assert note_counts(db, texts) == {text: 1 for text in texts}
            assert_applied_once_in_order(db, client_id, len(texts))
            telemetry = json.loads(db.execute("SELECT telemetry FROM sync_client WHERE client_id = ?",
                                              (client_id,)).fetchone()[0])
            assert telemetry["worker_version"] == new_version
            assert telemetry["queue_depth"] == 0
    assert served_worker_version(gate) == old_version


# -- h. the link drops mid-push and the answer never comes -------------------------------------

def test_a_push_left_unanswered_is_given_up_sent_again_and_applied_once(new_context, gate):
    with gate.restarted_with(SYNC_BROWSER_REQUEST_TIMEOUT_SECONDS="5"):
        context, page = device(new_context, gate, gate.user("clinician", HILLTOP))
        store = device_store(page)
        client_id, patient_id = store["client_id"], store["patients"][0]
        open_from_device(page, f"{gate.url}/patients/{patient_id}")

        gate.stall("/sync/v1/push")
        sent_before = len(gate.pushed_by)
        text = f"{unique_family('Stall')} written as the link dropped"
        write_note(page, text)
        # The first push is never answered; the device gives it up and tries again.
        deadline = time.monotonic() + 30
        while len(gate.pushed_by) - sent_before < 2:
            assert time.monotonic() < deadline, "the device waited on the unanswered push for good"
            page.wait_for_timeout(200)
        assert device_store(page)["outbox"] == 1

        # The link is back: the stalled pushes reach the server late, the next one is answered.
        gate.release()
        expect_synced(page)
        assert device_store(page)["outbox"] == 0
        with server_db(gate) as db:
            assert note_counts(db, [text]) == {text: 1}
            assert_applied_once_in_order(db, client_id, 1)


# -- i. the link drops while an answer is on its way --------------------------------------

# Every sync state the page is told of from now on, in order.
# Every state the page shows: each change's old value, then the value now, so a state shown
# only between two changes that arrive together is seen too.
_WATCH_SYNC_STATES = """() => {
  window.syncStatesSeen = [];
  new MutationObserver((changes) => {
    for (const change of changes) window.syncStatesSeen.push(change.oldValue);
    window.syncStatesSeen.push(document.documentElement.dataset.syncState);
  }).observe(document.documentElement,
             { attributes: true, attributeOldValue: true, attributeFilter: ["data-sync-state"] });
}"""


def test_an_answer_cut_off_on_its_way_is_taken_for_a_lost_link_and_tried_again(new_context,
                                                                               gate):
    context, page = device(new_context, gate, gate.user("clinician", HILLTOP))
    patient_id = device_store(page)["patients"][0]
    open_from_device(page, f"{gate.url}/patients/{patient_id}")
    expect_synced(page)
    page.evaluate(_WATCH_SYNC_STATES)

    gate.cut("/sync/v1/pull")
    go_online(context, page)  # the page asks the worker to sync now
    deadline = time.monotonic() + 30
    while gate.cuts == 0:
        assert time.monotonic() < deadline, "the device did not pull"
        page.wait_for_timeout(100)
    # Half an answer is no answer: the device is offline for a moment, not "Sync stopped". The
    # page hears of it a moment after the cut, while it still shows the sync before.
    page.wait_for_function("() => window.syncStatesSeen.includes('offline')", timeout=30_000)
    expect_synced(page)
    assert "attention" not in page.evaluate("() => window.syncStatesSeen")


# -- r. the first sync, cut short by closing the browser, resumes where it stopped -------------

PULL_PAGE = 10
PAGES_IN_HAND = 3  # static/sw/sync.js: pull answers a device holds unstored at most

_PROGRESS = """() => {
  const box = document.querySelector("#initial-sync");
  const bar = box && box.querySelector("progress");
  return { shown: !!box && !box.hidden, value: bar ? bar.value : null,
           ready: document.documentElement.dataset.offlineReady || null };
}"""


def test_a_first_sync_cut_short_by_closing_the_browser_resumes_where_it_stopped(browser,
                                                                              live_server,
                                                                              profile):
    user = live_server.user("lab", RIVERSIDE)
    state = signed_in_state(browser, live_server, user)
    with live_server.restarted_with(SYNC_BROWSER_PULL_PAGE=str(PULL_PAGE)):
        # A profile this person never used: the first sync starts, in pages of 10 records.
        context = launch_profile(browser, profile, state)
        try:
            page = first_page(context)
            page.goto(live_server.url + "/")
            unlock_when_asked(page, user)  # records are locked under the password before any arrive
            deadline = time.monotonic() + 20
            while True:
                progress = page.evaluate(_PROGRESS)
                assert progress["ready"] != "yes", "the first sync ended before it could be cut"
                if progress["shown"] and progress["value"] >= 5 * PULL_PAGE:
                    break
                assert time.monotonic() < deadline, f"no progress shown: {progress}"
            reached = progress["value"]
        finally:
            context.close()

        context = launch_profile(browser, profile, state)
        try:
            pulls = []
            context.on("request", lambda r: pulls.append(json.loads(r.post_data)) if is_pull(r) else None)
            page = first_page(context)
            page.goto(live_server.url + "/")
            unlock_when_asked(page, user)
            shown = []
            deadline = time.monotonic() + 30
            while (progress := page.evaluate(_PROGRESS))["ready"] != "yes":
                if progress["shown"]:
                    shown.append(progress["value"])
                assert time.monotonic() < deadline, f"the first sync did not finish: {progress}"
            store = device_store(page)
            print(f"cut at {reached} records; after the relaunch the bar showed {shown[:3]}...; "
                  f"{len(pulls)} pulls to finish; {store['rows']} records held")

            # It went on from the stored cursor, and the bar never went back.
            assert pulls and pulls[0]["cursor"] is not None, "the first sync started over"
            assert all(p["client_id"] == store["client_id"] for p in pulls)
            assert all(value >= reached for value in shown), (reached, shown)
            initial = store["initial_sync"]
            assert initial["done"] is True
            # Nothing came twice, but the one page whose answer the closing browser lost.
            assert store["rows"] <= initial["received"] <= store["rows"] + PULL_PAGE, initial
            assert store["outbox"] == 0

            # The server agrees: what it sent this device is what the device holds, plus at
            # most the answers the closing browser lost: those it held unstored (the page it was
            # storing among them) and the one on its way (a first sync started over would have
            # sent `reached` more).
            with audit_db(live_server) as audit:
                sent = sum(json.loads(detail)["records"] for (detail,) in audit.execute(
                    "SELECT detail FROM audit_event WHERE action = 'sync.pull' AND device = ?",
                    (store["client_id"],)))
            assert store["rows"] <= sent <= store["rows"] + (PAGES_IN_HAND + 1) * PULL_PAGE, (
                sent, store["rows"])

            # And the device works with no network: a chart comes from the device.
            patient_id = store["patients"][0]
            with server_db(live_server) as db:
                given, family = db.execute("SELECT given_name, family_name FROM patient WHERE id = ?",
                                           (patient_id,)).fetchone()
            go_offline(context)
            open_from_device(page, f"{live_server.url}/patients/{patient_id}")
            expect(page.locator("main")).to_contain_text(family)
            expect(page.locator("main")).to_contain_text(given)
        finally:
            context.close()
