"""Helpers shared by the browser tests."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from urllib.parse import urlparse

import pyotp

TOTP_STEP_S = 30
# The server accepts each TOTP code once per user, so remember the last time step
# used for each secret and never present the same step twice.
_last_totp_step: dict[str, int] = {}


def fresh_totp(secret: str) -> str:
    """A TOTP code for `secret` from a time step not used before in this process.

    Waits for the next 30-second step when the current one was already used, or
    when it is about to end (a code typed in the last instant could expire on arrival).
    """
    while True:
        now = time.time()
        step = int(now // TOTP_STEP_S)
        left = (step + 1) * TOTP_STEP_S - now
        if _last_totp_step.get(secret, -1) >= step or left < 1.5:
            time.sleep(left + 0.05)
            continue
        _last_totp_step[secret] = step
        return pyotp.TOTP(secret).at(step * TOTP_STEP_S)


def _path(url: str) -> str:
    return urlparse(url).path.rstrip("/") or "/"


def _submit(page, field_selector: str) -> None:
    # Click the submit button of the form that holds the field, not any other form's.
    form = page.locator(field_selector).locator("xpath=ancestor::form[1]")
    form.locator("button[type=submit]").first.click()


def sign_in(page, live_server, user: dict) -> None:
    """Sign `user` in with password and TOTP; returns once the browser has left /login."""
    page.goto(live_server.url + "/login")
    page.fill("input[name=username]", user["username"])
    page.fill("input[name=password]", user["password"])
    _submit(page, "input[name=username]")

    code_field = page.locator("input[name=code]")
    code_field.wait_for(state="visible")
    totp_path = _path(page.url)
    code_field.fill(fresh_totp(user["totp_secret"]))
    _submit(page, "input[name=code]")

    def signed_in(url: str) -> bool:
        path = _path(url)
        return path != totp_path and path != "/login" and not path.startswith("/login/")

    page.wait_for_url(signed_in)


@contextlib.contextmanager
def _sqlite(url: str):
    assert url.startswith("sqlite:///"), url
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        yield conn


@contextlib.contextmanager
def server_db(live_server):
    """The live server's own SQLite database, to check what the server ended with. Columns
    the server encrypts read through `opened(table, column, id, value)` in SQL, with the keys
    the live server derives from its SECRET_KEY."""
    from app.crypto.config_keys import key_config
    from app.crypto.field_cipher import FieldCipher, Place, decode_key, parse_keys
    keys = key_config(live_server.env, "development", live_server.env["SECRET_KEY"], RuntimeError)
    cipher = FieldCipher(parse_keys(keys["FIELD_ENCRYPTION_KEYS"]),
                         decode_key(keys["FIELD_BLIND_INDEX_KEY"], "FIELD_BLIND_INDEX_KEY"))
    with _sqlite(live_server.env["DATABASE_URL"]) as conn:
        conn.create_function("opened", 4, lambda table, column, row_id, value:
                             cipher.open(value, Place(table, column, row_id)), deterministic=True)
        yield conn


def audit_db(live_server):
    """The live server's audit log database (SQLite), to check what was recorded."""
    return _sqlite(live_server.env["AUDIT_DATABASE_URL"])
