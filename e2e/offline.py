"""Helpers for browser tests of the offline app: signed-in devices, connectivity, sync state."""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import quote, urlsplit

from playwright.sync_api import expect

from e2e.chromium import CHROMIUM, CHROMIUM_ARGS
from e2e.helpers import sign_in

READY_TIMEOUT_MS = 30_000
SYNC_TIMEOUT_MS = 20_000
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# A user signs in once per test session (a TOTP code works once, and the next one is up to
# 30 s away); later devices of the same user start from that session's cookies.
_states: dict[str, dict] = {}


def device(new_context, live_server, user: dict, **context_args):
    """A fresh browser profile (a device) signed in as `user`, its first sync finished."""
    state = _states.get(user["username"])
    context = new_context(storage_state=state, **context_args) if state else new_context(**context_args)
    page = context.new_page()
    if state:
        page.goto(live_server.url + "/")
    else:
        sign_in(page, live_server, user)
        _states[user["username"]] = context.storage_state()
    wait_until_ready(page, user)
    return context, page


def unlock_when_asked(page, user: dict, timeout_ms: int = READY_TIMEOUT_MS,
                      pin: str | None = None) -> None:
    """Give the person's password if this device asks for it: to set it up (their records
    are kept encrypted under it) or to unlock it, choosing `pin` for short breaks when the
    page offers it. Nothing happens if it is open already."""
    page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    while "/device/unlock" not in page.url:
        if page.evaluate("() => document.documentElement.dataset.offlineReady === 'yes'"):
            return
        assert time.monotonic() < deadline, "the device neither asked for a password nor got ready"
        here = urlsplit(page.url)
        page.goto(f"{here.scheme}://{here.netloc}/device/unlock?next="
                  + quote(here.path + (f"?{here.query}" if here.query else ""), safe=""))
        if "/device/unlock" not in page.url:
            return  # the worker sent the page back: this person's records are open
    page.fill("#unlock-password", user["password"])
    if pin is not None:
        page.fill("#unlock-new-pin", pin)
    page.click("#unlock button[type=submit]")
    page.wait_for_url(lambda url: "/device/unlock" not in url, timeout=timeout_ms)


def remember_sign_in(context, user: dict) -> None:
    """After signing `user` in again (their earlier session ended), later devices start from it."""
    _states[user["username"]] = context.storage_state()


def wait_until_ready(page, user: dict | None = None) -> None:
    """The worker controls the page and the device holds its subset: it works offline now.
    With `user`, their password is given first if the device asks for it."""
    if user is not None:
        unlock_when_asked(page, user)
    # Functions, not expressions: an expression would be compiled in the page, which its
    # Content-Security-Policy forbids.
    page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=READY_TIMEOUT_MS)
    page.wait_for_function("() => document.documentElement.dataset.offlineReady === 'yes'",
                           timeout=READY_TIMEOUT_MS)


def open_from_device(page, url: str, timeout_s: float = 10) -> None:
    """Open a page once this device holds what it shows (the worker renders it, not the server)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = page.goto(url)
        if answer is not None and answer.headers.get("x-rendered-by") == "service-worker":
            return
        assert time.monotonic() < deadline, f"{url} is still not on this device"
        page.wait_for_timeout(300)


def badge(page):
    return page.locator("#sync-badge")


def expect_synced(page, timeout: int = SYNC_TIMEOUT_MS) -> None:
    expect(badge(page)).to_have_attribute("data-state", "synced", timeout=timeout)
    expect(badge(page)).to_have_text("Synced")


def go_offline(context) -> None:
    context.set_offline(True)


def go_online(context, page) -> None:
    context.set_offline(False)
    # Chromium fires `online` itself; the worker also retries on its own timer.
    page.evaluate("window.dispatchEvent(new Event('online'))")


def unique_family(prefix: str) -> str:
    return prefix + "".join(secrets.choice("bcdfghjkmnpqrstvwxz") for _ in range(6)).title()


def register(page, live_server, given: str, family: str, phone: str | None = None) -> str:
    """Register a patient through the form (confirming past any duplicate warning); returns the id."""
    page.goto(live_server.url + "/patients/new")
    page.get_by_label("Given name").fill(given)
    page.get_by_label("Family name").fill(family)
    page.get_by_label("Sex").select_option("female")
    page.get_by_label("Date of birth").fill("1991-03-14")
    page.get_by_label("Phone").fill(phone or "+254 711 " + str(secrets.randbelow(900000) + 100000))
    page.get_by_role("button", name="Register", exact=True).click()
    confirm = page.get_by_role("button", name="None of these: register a new patient")
    page.wait_for_url(re.compile(rf"/patients/({UUID}|new)$"))
    if confirm.count():
        confirm.click()
    page.wait_for_url(re.compile(rf"/patients/{UUID}$"))
    return page.url.rsplit("/", 1)[1]


# -- helpers for fault tests: persistent profiles, the device's own store, queued writes ------

def signed_in_state(browser, live_server, user: dict) -> dict:
    """The storage state (cookies) of a signed-in session of `user`, signing in at most once."""
    state = _states.get(user["username"])
    if state is None:
        context = browser.new_context()
        try:
            sign_in(context.new_page(), live_server, user)
            state = _states[user["username"]] = context.storage_state()
        finally:
            context.close()
    return state


def launch_profile(browser, profile_dir, state: dict | None = None, **kwargs):
    """A whole browser on a profile directory that outlives it (close it and launch again to
    see what a device keeps); the cookies of `state` are added, as a sign-in would set them."""
    kwargs.setdefault("viewport", {"width": 1280, "height": 800})
    context = browser.browser_type.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, **kwargs)
    if state:
        context.add_cookies(state["cookies"])
    return context


# Reads the signed-in person's IndexedDB store without ever creating or upgrading one (a store
# created here would be at version 1 and empty, and the worker's upgrade would never run).
_READ_STORE = """async () => {
  const ask = (r) => new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error); });
  const names = (await indexedDB.databases()).map((d) => d.name);
  if (!names.includes("clinic-record-device")) return null;
  const device = await ask(indexedDB.open("clinic-record-device"));
  let userId;
  try {
    userId = await ask(device.transaction("device").objectStore("device").get("current_user_id"));
  } finally { device.close(); }
  if (!userId || !names.includes("clinic-record:" + userId)) return null;
  const db = await ask(indexedDB.open("clinic-record:" + userId));
  try {
    const tx = db.transaction(["meta", "outbox", "quarantine", "rows"]);
    const meta = tx.objectStore("meta");
    const get = async (key) => { const v = await ask(meta.get(key)); return v === undefined ? null : v; };
    const rows = tx.objectStore("rows");
    return {
      user_id: userId,
      client_id: await get("client_id"),
      cursor: await get("cursor"),
      next_seq: await get("next_seq"),
      acked_seq: await get("acked_seq"),
      initial_sync: await get("initial_sync"),
      outbox: await ask(tx.objectStore("outbox").count()),
      quarantine: await ask(tx.objectStore("quarantine").count()),
      rows: await ask(rows.count()),
      // The rows' key is [entity, id]: one entity's rows are one range of it.
      patients: (await ask(rows.getAllKeys(IDBKeyRange.bound(["patient"], ["patient", []])))).map((key) => key[1]),
    };
  } finally { db.close(); }
}"""


def device_store(page) -> dict | None:
    """What the device holds for the signed-in person: client_id, cursor, seqs, initial_sync,
    outbox/quarantine/rows counts and the ids of the patients it holds (None: no store yet)."""
    return page.evaluate(_READ_STORE)


# Posts forms the way a person's browser does, to the worker (which queues them): fast enough
# to queue a hundred writes. Each form carries the page's CSRF token and a fresh `mid` token,
# as every rendered form does.
_POST_NOTES = """async ([patientId, texts]) => {
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const answers = [];
  for (const text of texts) {
    const body = new URLSearchParams({ csrf_token: token, mid: crypto.randomUUID(), text, sign: "no" });
    const answer = await fetch(`/patients/${patientId}/notes`, { method: "POST", body, redirect: "manual" });
    answers.push(answer.type === "opaqueredirect" ? "redirect" : String(answer.status));
  }
  return answers;
}"""


def queue_notes(page, patient_id: str, texts: list[str]) -> None:
    """Write one draft note per text through the note form's address, from a page the worker
    rendered (its CSRF token is the one the worker checks), with the network off: each must be
    queued by the worker (answered with the redirect to the chart)."""
    answers = page.evaluate(_POST_NOTES, [patient_id, texts])
    assert answers == ["redirect"] * len(texts), answers


# The signed-in person's key slot on the device, read or changed as the worker keeps it.
KEY_SLOT = """async (change) => {
  const ask = (r) => new Promise((ok, no) => { r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
  const device = await ask(indexedDB.open("clinic-record-device"));
  try {
    const userId = await ask(device.transaction("device").objectStore("device").get("current_user_id"));
    const tx = device.transaction("keyslots", "readwrite");
    const slots = await ask(tx.objectStore("keyslots").get(userId));
    if (change && change.idle_minutes != null) {
      slots.last_active_at = Date.now() - change.idle_minutes * 60000;
      await ask(tx.objectStore("keyslots").put(slots, userId));
    }
    return { user_id: userId, last_active_at: slots.last_active_at, has_pin: Boolean(slots.pin),
             pin_failures: slots.pin_failures || 0, secret: Boolean(slots.secret) };
  } finally {
    device.close();
  }
}"""


def away_for(page, minutes: float) -> dict:
    """As if nobody had touched the device for `minutes` (negative: its clock was set back)."""
    return page.evaluate(KEY_SLOT, {"idle_minutes": minutes})
