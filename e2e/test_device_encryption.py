"""Patient data at rest on a tablet (DESIGN.md §6): encrypted in the browser profile, opened
offline only with the person's password, and a limit on wrong guesses."""
from __future__ import annotations

import json
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from playwright.sync_api import expect

from e2e.helpers import audit_db, server_db, sign_in
from e2e.offline import (KEY_SLOT, away_for, device, expect_synced, go_offline, go_online, launch_profile,
                         open_from_device, register, signed_in_state, unlock_when_asked,
                         wait_until_ready)

pytestmark = pytest.mark.e2e

RIVERSIDE = 0


def _canary() -> str:
    # Random capitals: no run of it repeats elsewhere, so storage compression cannot hide it.
    return "Qx" + "".join(secrets.choice("BCDFGHJKLMNPRSTVWXZ") for _ in range(14)).title()


def _traces(root: Path, canary: str) -> list[str]:
    """Files under `root` holding the canary as UTF-8, Latin-1 or UTF-16 (Blink keeps strings
    either way)."""
    needles = {canary.encode("utf-8"), canary.encode("utf-16-le")}
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(n in data for n in needles):
                found.append(str(path.relative_to(root)))
    return found


def _first_page(context):
    return context.pages[0] if context.pages else context.new_page()


@contextmanager
def _tablet(browser, profile: Path, state: dict | None):
    """The installed app on a tablet whose profile lives in `profile`; closing it is a
    restart."""
    context = launch_profile(browser, profile, state)
    try:
        yield context, _first_page(context)
    finally:
        context.close()


def _ready(page, live_server, user, pin: str | None = None) -> None:
    page.goto(live_server.url + "/")
    unlock_when_asked(page, user, pin=pin)
    wait_until_ready(page)


def _wait_until(condition, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the device did not record it in time"
        time.sleep(0.1)


def test_the_scan_finds_a_name_kept_in_the_clear(browser, live_server, tmp_path):
    # The check below is only worth something if a name written the ordinary way is found.
    canary = _canary()
    with _tablet(browser, tmp_path / "plain", None) as (_, page):
        page.goto(live_server.url + "/login")
        page.evaluate("""async (name) => {
          const open = indexedDB.open("plain-check", 1);
          open.onupgradeneeded = () => open.result.createObjectStore("rows");
          const db = await new Promise((ok) => { open.onsuccess = () => ok(open.result); });
          const tx = db.transaction("rows", "readwrite", { durability: "strict" });
          tx.objectStore("rows").put({ family_name: name, given_name: "Amina" }, 1);
          await new Promise((ok) => { tx.oncomplete = ok; });
          db.close();
        }""", canary)
    assert _traces(tmp_path / "plain", canary)


def test_a_patient_registered_offline_leaves_no_readable_trace_in_the_profile(browser, live_server,
                                                                             tmp_path):
    user = live_server.user("registration_clerk", RIVERSIDE)
    state = signed_in_state(browser, live_server, user)
    profile = tmp_path / "tablet"
    canary = _canary()
    with _tablet(browser, profile, state) as (context, page):
        _ready(page, live_server, user)
        go_offline(context)
        patient_id = register(page, live_server, "Amina", canary, phone="0700 123 456")
        open_from_device(page, f"{live_server.url}/patients/{patient_id}")
        assert canary in page.content()  # the person sees it; the disk must not
        # Searched for by name, typed and then with the button: the term stays out of the
        # address, and so out of the browser's history.
        open_from_device(page, f"{live_server.url}/patients")
        page.fill("#q", canary)
        expect(page.locator("#results")).to_contain_text(canary)
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#results")).to_contain_text(canary)
        assert canary not in page.url
    found = _traces(profile, canary)
    assert found == [], found


def test_after_a_restart_the_records_open_only_with_the_password(browser, live_server, tmp_path):
    user = live_server.user("registration_clerk", RIVERSIDE)
    state = signed_in_state(browser, live_server, user)
    profile = tmp_path / "tablet"
    with _tablet(browser, profile, state) as (_, page):
        _ready(page, live_server, user)

    # A restart loses the key; offline, the device asks for the password and counts misses.
    with _tablet(browser, profile, state) as (context, page):
        go_offline(context)
        page.goto(live_server.url + "/patients")
        assert "/device/unlock" in page.url
        assert page.locator("h1").inner_text() == "Unlock this device"
        page.fill("#unlock-password", "not the password")
        page.click("#unlock button[type=submit]")
        problem = page.locator("[data-unlock-problem]")
        assert "does not unlock" in problem.inner_text()
        assert "4 attempts are left" in problem.inner_text()
        assert "/device/unlock" in page.url

        page.fill("#unlock-password", user["password"])
        page.click("#unlock button[type=submit]")
        page.wait_for_url(lambda url: url.endswith("/patients"))
        open_from_device(page, live_server.url + "/patients")


def test_too_many_wrong_passwords_remove_the_key_but_the_queue_still_reaches_the_server(
        browser, live_server, tmp_path):
    user = live_server.user("registration_clerk", RIVERSIDE)
    state = signed_in_state(browser, live_server, user)
    profile = tmp_path / "tablet"
    family = _canary()
    with _tablet(browser, profile, state) as (context, page):
        _ready(page, live_server, user)
        go_offline(context)
        patient_id = register(page, live_server, "Amina", family)

    with _tablet(browser, profile, state) as (context, page):
        go_offline(context)
        page.goto(live_server.url + "/patients")
        for _ in range(5):
            page.fill("#unlock-password", "wrong guess")
            page.click("#unlock button[type=submit]")
        assert "too many times" in page.locator("[data-unlock-problem]").inner_text()
        held = page.evaluate("""async () => {
          const ask = (r) => new Promise((ok, no) => { r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
          const device = await ask(indexedDB.open("clinic-record-device"));
          const userId = await ask(device.transaction("device").objectStore("device").get("current_user_id"));
          const slots = await ask(device.transaction("keyslots").objectStore("keyslots").get(userId));
          device.close();
          const db = await ask(indexedDB.open("clinic-record:" + userId));
          const queued = await ask(db.transaction("outbox").objectStore("outbox").getAll());
          db.close();
          return { secret: slots.secret, queued: queued.length,
                   escrowed: queued.every((e) => e.parts.every((p) => p.escrow && p.escrow.ct)) };
        }""")
        assert held == {"secret": None, "queued": 1, "escrowed": True}
        # The right password no longer helps without the server: the slot is gone.
        live_server.stop()
        try:
            page.fill("#unlock-password", user["password"])
            page.click("#unlock button[type=submit]")
            assert "needs a connection" in page.locator("[data-unlock-problem]").inner_text()
        finally:
            live_server.start()

        # Online, the server opens the escrowed change for its author; the device takes a
        # new key and sends it.
        go_online(context, page)
        page.fill("#unlock-password", user["password"])
        page.click("#unlock button[type=submit]")
        page.wait_for_url(lambda url: "/device/unlock" not in url)
        expect_synced(page)
        with server_db(live_server) as db:
            row = db.execute("SELECT family_name FROM patient WHERE id = ?", (patient_id,)).fetchone()
        assert row is not None and row["family_name"] == family
        with audit_db(live_server) as log:
            recovered = log.execute("SELECT detail FROM audit_event WHERE action = "
                                    "'device.outbox_recovered' ORDER BY id DESC").fetchone()
        assert recovered is not None and json.loads(recovered["detail"])["opened"] == 1
        open_from_device(page, f"{live_server.url}/patients/{patient_id}")
        assert family in page.content()


def test_a_device_left_alone_locks_behind_the_pin_and_later_behind_the_password(
        browser, live_server, tmp_path):
    user = live_server.user("nurse", RIVERSIDE)
    state = signed_in_state(browser, live_server, user)
    with _tablet(browser, tmp_path / "tablet", state) as (context, page):
        _ready(page, live_server, user, pin="2468")
        assert page.evaluate(KEY_SLOT, None)["has_pin"]
        patients = live_server.url + "/patients"
        go_offline(context)

        # Taps count as use: the idle time starts again.
        before = away_for(page, 4)["last_active_at"]
        page.mouse.click(5, 5)
        _wait_until(lambda: page.evaluate(KEY_SLOT, None)["last_active_at"] > before)

        # A few minutes away: the PIN opens it again, offline, with the key still in memory.
        away_for(page, 6)
        page.goto(patients)
        assert "/device/unlock" in page.url
        assert page.locator("h1").inner_text() == "Locked while you were away"
        page.fill("#unlock-pin", "1357")
        page.click("#unlock button[type=submit]")
        assert "4 attempts are left" in page.locator("[data-unlock-problem]").inner_text()
        page.fill("#unlock-pin", "2468")
        page.click("#unlock button[type=submit]")
        page.wait_for_url(lambda url: url.endswith("/patients"))
        open_from_device(page, patients)

        # An open page goes to the lock screen by itself once the idle time has passed.
        user_id = away_for(page, 6)["user_id"]
        page.evaluate("""(userId) => navigator.serviceWorker.controller.postMessage(
            { type: "idle-check", user_id: userId })""", user_id)
        page.wait_for_url(lambda url: "/device/unlock" in url)

        # Too many wrong PINs: the key goes, and only the password opens the records.
        for _ in range(5):
            page.fill("#unlock-pin", "1357")
            page.click("#unlock button[type=submit]")
        assert "locked fully" in page.locator("[data-unlock-problem]").inner_text()
        assert page.locator("#unlock").get_attribute("data-unlock-mode") == "cold"
        assert page.locator("#unlock-pin").count() == 0
        page.fill("#unlock-password", user["password"])
        page.click("#unlock button[type=submit]")
        page.wait_for_url(lambda url: "/device/unlock" not in url)

        # An hour away, or a clock set back to look like less: the password, not the PIN.
        for minutes in (61, -10):
            away_for(page, minutes)
            page.goto(patients)
            assert page.locator("#unlock").get_attribute("data-unlock-mode") == "cold", minutes
            page.fill("#unlock-password", user["password"])
            page.click("#unlock button[type=submit]")
            page.wait_for_url(lambda url: url.endswith("/patients"))
        open_from_device(page, patients)
        assert page.evaluate(KEY_SLOT, None)["has_pin"]  # the PIN stays for the next short break


def test_a_passkey_unlocks_the_device_offline(live_server, new_context):
    # WebAuthn does not accept an IP address as the site's name.
    site = SimpleNamespace(url=live_server.url.replace("127.0.0.1", "localhost"))
    user = live_server.user("clinician", RIVERSIDE)
    context = new_context()
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True, "hasPrf": True}})
    sign_in(page, site, user)
    wait_until_ready(page, user)
    page.goto(site.url + "/account")
    page.fill("#passkey-name", "Ward tablet")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("#passkey-list")).to_contain_text("Ward tablet")

    # Signing in with the passkey hands its PRF output to the worker; the password, given once
    # more, opens the key, which is then wrapped under the passkey too.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(lambda url: "/login" in url)
    page.fill("input[name=username]", user["username"])
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_url(lambda url: "/device/unlock" in url)
    assert page.get_by_role("button", name="Unlock with a passkey").count() == 0
    page.fill("#unlock-password", user["password"])
    page.click("#unlock button[type=submit]")
    page.wait_for_url(lambda url: "/device/unlock" not in url)
    wait_until_ready(page)

    # An hour later, with no connection: the passkey alone opens the records.
    away_for(page, 61)
    go_offline(context)
    patients = site.url + "/patients"
    page.goto(patients)
    assert page.locator("#unlock").get_attribute("data-unlock-mode") == "cold"
    page.get_by_role("button", name="Unlock with a passkey").click()
    page.wait_for_url(lambda url: url.endswith("/patients"))
    open_from_device(page, patients)


# Sent from the page, which then stays busy for a while: a slow tablet's page under load.
_ASK_THEN_STAY_BUSY = """(busyMs) => setTimeout(() => {
  const userId = document.querySelector('meta[name="clinic-user"]').content;
  navigator.serviceWorker.controller.postMessage({ type: "idle-check", user_id: userId });
  const end = Date.now() + busyMs;
  while (Date.now() < end) { /* busy */ }
}, 0)"""


def test_a_page_slow_to_answer_a_restarted_worker_still_hands_it_the_key(new_context, live_server):
    user = live_server.user("lab", RIVERSIDE)
    context, page = device(new_context, live_server, user)
    patients = live_server.url + "/patients"
    open_from_device(page, patients)
    # The browser stops a worker left idle; the next message starts a fresh one, which holds
    # no key until the page hands it back.
    cdp = context.new_cdp_session(page)
    cdp.send("ServiceWorker.enable")
    cdp.send("ServiceWorker.stopAllWorkers")
    page.evaluate(_ASK_THEN_STAY_BUSY, 1500)
    page.wait_for_timeout(4000)
    # Still open, not sent to the unlock screen for the password.
    expect(page).to_have_url(patients)
    open_from_device(page, patients)
