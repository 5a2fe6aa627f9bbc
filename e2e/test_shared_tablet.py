"""Two people on one tablet (DESIGN.md §6): each has their own encrypted store and key on it;
the next person never sees what the last one kept there, and every change carries its author."""
from __future__ import annotations

import json
import re

import pytest

from e2e.helpers import server_db, sign_in
from e2e.offline import (away_for, device_store, expect_synced, go_offline, go_online, register,
                         unique_family, wait_until_ready)

pytestmark = pytest.mark.e2e

RIVERSIDE = 0

# Everything the store of `userId` keeps, as it is on disk, read without its key.
_RAW_STORE = """async (userId) => {
  const ask = (r) => new Promise((ok, no) => { r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
  const db = await ask(indexedDB.open("clinic-record:" + userId));
  try {
    const tx = db.transaction(["outbox", "rows", "meta"]);
    const all = {};
    for (const name of ["outbox", "rows", "meta"]) all[name] = await ask(tx.objectStore(name).getAll());
    return JSON.stringify(all, (key, value) => value instanceof Uint8Array ? Array.from(value) : value);
  } finally { db.close(); }
}"""


def _sign_out(page) -> None:
    # With changes not yet sent the app asks first; they stay on the tablet for their author.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(lambda url: "/login" in url)


def _user_id(live_server, user: dict) -> str:
    with server_db(live_server) as db:
        return db.execute("SELECT id FROM user WHERE username = ?", (user["username"],)).fetchone()["id"]


def test_two_people_share_a_tablet_without_seeing_each_others_records(new_context, live_server):
    clerk = live_server.user("registration_clerk", RIVERSIDE)
    clinician = live_server.user("clinician", RIVERSIDE)
    context = new_context()
    page = context.new_page()
    sign_in(page, live_server, clerk)
    wait_until_ready(page, clerk)
    clerk_id = device_store(page)["user_id"]

    # The clerk registers a patient with no connection and walks away before it is sent; the
    # tablet locks. The next person signs the clerk out from the lock screen itself.
    family = unique_family("Shared")
    go_offline(context)
    patient_id = register(page, live_server, "Amina", family)
    assert device_store(page)["outbox"] == 1
    away_for(page, 6)
    page.goto(f"{live_server.url}/patients")
    assert "/device/unlock" in page.url
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#unlock").get_by_role("button", name=re.compile(r"^Sign .* out$")).click()
    page.wait_for_url(lambda url: "/login" in url)

    # The clinician takes the tablet: a store of their own, without the clerk's patient.
    go_online(context, page)
    sign_in(page, live_server, clinician)
    wait_until_ready(page, clinician)
    store = device_store(page)
    assert store["user_id"] != clerk_id
    assert store["outbox"] == 0 and patient_id not in store["patients"]
    page.goto(f"{live_server.url}/patients/{patient_id}")
    assert family not in page.content()
    page.goto(f"{live_server.url}/patients")
    assert family not in page.content()
    # The clerk's store is still on the tablet, its queue included, and reads as noise.
    kept = page.evaluate(_RAW_STORE, clerk_id)
    assert family not in kept and '"outbox":[{' in kept
    with server_db(live_server) as db:
        assert db.execute("SELECT 1 FROM patient WHERE id = ?", (patient_id,)).fetchone() is None
    _sign_out(page)

    # The clerk comes back: their queued patient is sent, as theirs.
    sign_in(page, live_server, clerk)
    wait_until_ready(page, clerk)
    expect_synced(page)
    with server_db(live_server) as db:
        authors = [row["changed_by"] for row in db.execute(
            "SELECT changed_by FROM entity_history WHERE entity = 'patient' AND entity_id = ?",
            (patient_id,))]
    assert authors == [_user_id(live_server, clerk)]
    assert json.loads(page.evaluate(_RAW_STORE, clerk_id))["outbox"] == []
