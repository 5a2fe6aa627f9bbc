"""Helpers for browser tests of the offline app: signed-in devices, connectivity, sync state."""

from __future__ import annotations

import re
import secrets
import time

from playwright.sync_api import expect

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
    wait_until_ready(page)
    return context, page


def wait_until_ready(page) -> None:
    """The worker controls the page and the device holds its subset: it works offline now."""
    page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=READY_TIMEOUT_MS)
    page.wait_for_function("document.documentElement.dataset.offlineReady === 'yes'",
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
