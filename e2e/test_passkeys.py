"""A person adds a passkey from their account page, signs out, and signs in with it; when
their device cannot confirm it is them, they are refused with a clear message and no session.

Chromium's virtual authenticator (DevTools protocol) stands in for a phone or tablet. WebAuthn
does not accept an IP address as the site's name, so the browser uses http://localhost here.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from playwright.sync_api import expect

from e2e.helpers import audit_db, server_db, sign_in

PASSKEY_NAME = "Review desk tablet"


def _on_localhost(live_server) -> SimpleNamespace:
    return SimpleNamespace(url=live_server.url.replace("127.0.0.1", "localhost"))


def _sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login"))


def test_passkey_added_in_settings_signs_in_and_is_refused_without_user_verification(
        live_server, new_context):
    site = _on_localhost(live_server)
    user = live_server.user("privacy_officer")
    context = new_context()
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    authenticator = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True, "hasPrf": True}})["authenticatorId"]

    sign_in(page, site, user)
    page.goto(site.url + "/account")
    page.fill("#passkey-name", PASSKEY_NAME)
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("#passkey-list")).to_contain_text(PASSKEY_NAME)
    expect(page.locator("#passkey-list")).to_contain_text("not used yet")
    assert len(cdp.send("WebAuthn.getCredentials",
                        {"authenticatorId": authenticator})["credentials"]) == 1

    _sign_out(page)
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_url(lambda url: "/login" not in url)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.goto(site.url + "/account")
    expect(page.locator("#passkey-list")).to_contain_text("last used")
    with audit_db(live_server) as audit:
        rows = audit.execute("SELECT detail FROM audit_event WHERE action = 'sign_in' AND "
                             "outcome = 'success' AND username = ? ORDER BY id DESC LIMIT 1",
                             (user["username"],)).fetchall()
    assert rows and '"passkey"' in rows[0]["detail"]

    _sign_out(page)
    cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator,
                                          "isUserVerified": False})
    page.get_by_role("button", name="Sign in with a passkey").click()
    error = page.locator("[data-passkey-sign-in] [data-passkey-error]")
    expect(error).to_be_visible()
    expect(error).to_contain_text("could not confirm that it is you")
    assert "/login" in page.url
    page.goto(site.url + "/account")
    page.wait_for_url(re.compile(r"/login"))
    with server_db(live_server) as db:
        stored = db.execute("SELECT p.name FROM passkey_credential p JOIN user u "
                            "ON u.id = p.user_id WHERE u.username = ?",
                            (user["username"],)).fetchall()
    assert [row["name"] for row in stored] == [PASSKEY_NAME]
