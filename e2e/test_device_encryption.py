"""Patient data at rest on a tablet (DESIGN.md §6): encrypted in the browser profile, opened
offline only with the person's password, and a limit on wrong guesses."""
from __future__ import annotations

import secrets
from contextlib import contextmanager
from pathlib import Path

import pytest

from e2e.helpers import audit_db, server_db
from e2e.offline import (expect_synced, go_offline, go_online, launch_profile, open_from_device,
                         register, signed_in_state, unlock_when_asked, wait_until_ready)

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


def _ready(page, live_server, user) -> None:
    page.goto(live_server.url + "/")
    unlock_when_asked(page, user)
    wait_until_ready(page)


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
        assert recovered is not None and '"opened": 1' in recovered["detail"]
        open_from_device(page, f"{live_server.url}/patients/{patient_id}")
        assert family in page.content()
