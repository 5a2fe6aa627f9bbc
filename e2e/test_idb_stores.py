"""The browser's IndexedDB stores (static/idb/), driven in real Chromium.

Each test gets a fresh browser context (so a fresh, empty IndexedDB) on
tests/js/idb_harness.html, which puts every export of the store modules on `window`.
The page is served by a small static server on 127.0.0.1: module scripts need http://.
"""

from __future__ import annotations

import base64
import posixpath
import threading
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jsonschema
import pytest

from app.crypto.outbox_escrow import EscrowKeys, load_private_key
from app.domain.mutations import ENVELOPE_SCHEMA, schemas_for_browser

ROOT = Path(__file__).resolve().parent.parent
HARNESS = "/tests/js/idb_harness.html"
# Only what the harness loads; the repository root also holds instance/ databases.
SERVED_PREFIXES = ("/static/", "/tests/js/")
USER = "u1"

# What the browser gets from the server: schemas_for_browser().types.
POLICIES = {name: {"policy": t["policy"], "creates": t["creates"], "entity": t["entity"]}
            for name, t in schemas_for_browser()["types"].items()}


def new_id() -> str:
    return str(uuid.uuid4())


CLINIC = new_id()


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".html": "text/html"}

    def do_GET(self):
        path = posixpath.normpath(unquote(urlsplit(self.path).path))
        if not (path + "/").startswith(SERVED_PREFIXES):
            self.send_error(404)
            return
        super().do_GET()

    def log_message(self, format, *args):  # keep test output to what failed
        pass


@pytest.fixture(scope="module")
def static_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(ROOT)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _load(page, url: str) -> None:
    page.goto(url + HARNESS)
    page.wait_for_function("window.storesReady === true")
    page.evaluate("p => { window.P = p; }", POLICIES)


@pytest.fixture
def page(new_context, static_url):
    page = new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _load(page, static_url)
    yield page
    assert not errors, f"uncaught errors in the page: {errors}"


def run(page, body: str, arg=None):
    """Run `body` as an async function with `db` open on the test user's store, `arg`
    passed in and `P` the mutation policies; returns what the body returns."""
    script = ("async (arg) => { const db = await openStore(%r);\n"
              "try { return await (async () => {\n%s\n})(); } finally { db.close(); } }") % (USER, body)
    return page.evaluate(script, arg)


# Mutation builders, shaped like the sync protocol's core types. -----------------------------

def register(patient_id: str, **data) -> dict:
    return {"mid": new_id(), "type": "patient.register", "entity": "patient",
            "entity_id": patient_id,
            "data": {"given_name": "Amina", "family_name": "Odhiambo", "sex": "female",
                     "birth_date": "1990-04-01", "clinic_id": CLINIC, **data}}


def update(patient_id: str, data: dict, base: dict | None = None, base_version=None) -> dict:
    m = {"mid": new_id(), "type": "patient.update", "entity": "patient",
         "entity_id": patient_id, "data": data, "patient_id": patient_id}
    if base is not None:
        m["base"] = base
    if base_version is not None:
        m["base_version"] = base_version
    return m


def observation(patient_id: str, value=72, entity_id: str | None = None) -> dict:
    return {"mid": new_id(), "type": "observation.record", "entity": "observation",
            "entity_id": entity_id or new_id(), "patient_id": patient_id,
            "data": {"patient_id": patient_id, "code": "8867-4", "value": value, "unit": "/min",
                     "effective_at": "2026-11-21T10:04:00Z"}}


def mutation(type_name: str, entity_id: str, data: dict | None = None, **extra) -> dict:
    return {"mid": new_id(), "type": type_name, "entity": POLICIES[type_name]["entity"],
            "entity_id": entity_id, "data": data or {}, **extra}



def enqueue(page, mutations: list[dict], policies: dict | None = None) -> list[dict]:
    return run(page, "return enqueue(db, arg.m, arg.p ?? P);",
               {"m": mutations, "p": policies})


def pending(page) -> list[dict]:
    return run(page, "return pending(db);")


def seal(page) -> int:
    return run(page, "return seal(db);")


def settle(page, results: list[dict], request_id: str | None = None) -> dict:
    return run(page, "return settle(db, arg.r, arg.id);", {"r": results, "id": request_id})


def meta(page) -> dict:
    return run(page, "return allMeta(db);")


def answer(entry: dict, status: str = "applied", **extra) -> dict:
    return {"mid": entry["mid"], "seq": entry.get("seq"), "status": status,
            "entity": entry["entity"], "entity_id": entry["entity_id"], **extra}


# The database itself ---------------------------------------------------------------------------

def test_a_new_database_is_created_with_every_store_and_starting_positions(page):
    shape = run(page, """
        const names = [...db.objectStoreNames].sort();
        const tx = db.transaction(names);
        const stores = {};
        for (const name of names) {
          const store = tx.objectStore(name);
          const indexes = {};
          for (const index of store.indexNames) {
            indexes[index] = {keyPath: store.index(index).keyPath, unique: store.index(index).unique};
          }
          stores[name] = {keyPath: store.keyPath, indexes};
        }
        return {name: db.name, version: db.version, expected: DB_VERSION, stores,
                meta: await allMeta(db)};
    """)
    assert shape["name"] == f"clinic-record:{USER}"
    assert shape["version"] == shape["expected"] == 3
    assert shape["stores"] == {
        "meta": {"keyPath": None, "indexes": {}},
        "outbox": {"keyPath": "mid", "indexes": {"order": {"keyPath": "order", "unique": True}}},
        "quarantine": {"keyPath": "mid", "indexes": {}},
        "rows": {"keyPath": ["entity", "id"],
                 "indexes": {"patient_id": {"keyPath": "patient_id", "unique": False}}},
        "sent": {"keyPath": "mid", "indexes": {"seq": {"keyPath": "seq", "unique": False}}},
    }
    assert shape["meta"]["next_seq"] == 1
    assert shape["meta"]["acked_seq"] == 0


def test_each_user_has_their_own_database_and_deleting_one_keeps_the_other(page):
    names = page.evaluate("""async () => {
        const one = await openStore("u1");
        const two = await openStore("u2");
        await setMeta(one, {client_id: "c-one"});
        await setMeta(two, {client_id: "c-two"});
        two.close();
        // `one` stays open: deleting must not wait for it to be closed by hand.
        await deleteStore("u1");
        const names = (await indexedDB.databases()).map((d) => d.name).sort();
        const again = await openStore("u2");
        const kept = await getMeta(again, "client_id");
        again.close();
        const fresh = await openStore("u1");
        const gone = await getMeta(fresh, "client_id", "none");
        fresh.close();
        return {names, kept, gone};
    }""")
    assert names == {"names": ["clinic-record:u2"], "kept": "c-two", "gone": "none"}
    with pytest.raises(Exception, match="user's id"):
        page.evaluate("() => openStore('')")


def test_a_reopened_database_keeps_every_store(page, static_url):
    patient = new_id()
    sent, rejected, queued, fresh = (observation(patient) for _ in range(4))
    enqueue(page, [sent, rejected, queued])
    seal(page)
    sealed = pending(page)
    settle(page, [answer(sealed[0]), answer(sealed[1], "rejected", error={"code": "x"})], "req-9")
    enqueue(page, [fresh])
    run(page, """
        await applyChanges(db, [{op: "put", entity: "patient", id: arg, version: 3,
                                 record: {id: arg, version: 3}}]);
        await setMeta(db, {client_id: "c-1", cursor: "abc"});
    """, patient)
    before = run(page, "return {p: await pending(db), m: await allMeta(db), s: await stats(db)};")

    # A new page load: nothing of the old page's memory survives, only IndexedDB.
    page.reload()
    _load(page, static_url)
    after = run(page, """
        return {p: await pending(db), m: await allMeta(db), s: await stats(db),
                q: await listQuarantine(db), sent: await db.getAll("sent"),
                r: await getRecord(db, "patient", arg)};
    """, patient)
    assert after["p"] == before["p"]
    assert [e["mid"] for e in after["p"]] == [queued["mid"], fresh["mid"]]
    assert after["m"] == before["m"]
    assert after["m"]["cursor"] == "abc" and after["m"]["acked_seq"] == 2
    assert after["s"] == before["s"] == {"pending": 2, "quarantined": 1,
                                          "oldest_pending_at": before["p"][0]["created_at"]}
    assert [q["mid"] for q in after["q"]] == [rejected["mid"]]
    assert [s["mid"] for s in after["sent"]] == [sent["mid"]]
    assert after["r"] == {"id": patient, "version": 3}


def test_a_version_2_store_keeps_its_rows_and_loses_only_the_entity_index(page):
    # A store as version 2 made it (with an index on `entity`), holding a row and a cursor:
    # the upgrade keeps both, and one entity's rows are still read by their key range.
    patient = new_id()
    result = page.evaluate("""async (id) => {
        const ask = (r) => new Promise((ok, no) => { r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
        const name = "clinic-record:%s";
        const open = indexedDB.open(name, 2);
        open.onupgradeneeded = () => {
          const db = open.result;
          const rows = db.createObjectStore("rows", { keyPath: ["entity", "id"] });
          rows.createIndex("patient_id", "patient_id");
          rows.createIndex("entity", "entity");
          db.createObjectStore("outbox", { keyPath: "mid" }).createIndex("order", "order", { unique: true });
          db.createObjectStore("sent", { keyPath: "mid" }).createIndex("seq", "seq");
          const meta = db.createObjectStore("meta");
          db.createObjectStore("quarantine", { keyPath: "mid" });
          meta.put(1, "next_seq"); meta.put(0, "acked_seq"); meta.put(1, "next_order"); meta.put("c-3", "cursor");
        };
        const v2 = await ask(open);
        const [secret] = await encryptJSONAll(TEST_KEY, ["row\u0000patient\u0000" + id], [{id, given_name: "Amina"}]);
        const tx = v2.transaction("rows", "readwrite");
        tx.objectStore("rows").put({entity: "patient", id, version: 4, patient_id: id, secret});
        await new Promise((ok) => { tx.oncomplete = ok; });
        v2.close();
        const db = await openStore("%s");
        try {
          return {version: db.version, indexes: [...db.transaction("rows").objectStore("rows").indexNames],
                  record: await getRecord(db, "patient", id), patients: (await recordsOfEntity(db, "patient")).length,
                  cursor: await getMeta(db, "cursor"), count: await countRows(db)};
        } finally { db.close(); }
    }""" % (USER, USER), patient)
    assert result == {"version": 3, "indexes": ["patient_id"], "record": {"id": patient, "given_name": "Amina"},
                      "patients": 1, "cursor": "c-3", "count": 1}


def test_many_values_encrypted_at_once_read_as_one_encrypted_alone(page):
    out = page.evaluate("""async () => {
        const contexts = [], values = [];
        // More than one draw of IVs, values of every size and the characters that widen in UTF-8.
        for (let i = 0; i < 6000; i++) {
          contexts.push(`row\u0000observation\u0000${i}`);
          values.push(i % 3 ? {i, note: "é漢😀".repeat(i % 700)} : i % 2 ? null : "x");
        }
        const sealed = await encryptJSONAll(TEST_KEY, contexts, values);
        const opened = await Promise.all(sealed.map((bytes, i) => decryptJSON(TEST_KEY, contexts[i], bytes)));
        const ivs = new Set(sealed.map((bytes) => Array.from(bytes.subarray(0, 12)).join(",")));
        const alone = await encryptJSON(TEST_KEY, contexts[5], values[5]);
        return {same: opened.every((v, i) => JSON.stringify(v) === JSON.stringify(values[i])),
                ivs: ivs.size, lengths: sealed[5].length === alone.length,
                swapped: await decryptJSON(TEST_KEY, contexts[1], sealed[2]).then(() => "opened", (e) => e.name)};
    }""")
    assert out == {"same": True, "ivs": 6000, "lengths": True, "swapped": "OperationError"}


def test_meta_values_fallbacks_and_removal(page):
    result = run(page, """
        const missing = await getMeta(db, "cursor", "start");
        await setMeta(db, {cursor: "c1", initial_sync: {done: false}, session: null});
        const set = await allMeta(db);
        await setMeta(db, {session: undefined});
        return {missing, set, nullKept: await getMeta(db, "session", "fallback"),
                cursor: await getMeta(db, "cursor")};
    """)
    assert result["missing"] == "start"
    assert result["set"]["cursor"] == "c1"
    assert result["set"]["initial_sync"] == {"done": False}
    assert result["set"]["session"] is None
    assert result["nullKept"] == "fallback"  # undefined removes the key
    assert result["cursor"] == "c1"


# Enqueue and compaction ------------------------------------------------------------------------

def test_enqueue_keeps_creation_order_and_marks_entries_open(page):
    patient = new_id()
    first = [register(patient), observation(patient, 70)]
    second = [observation(patient, 71), observation(patient, 72)]
    stored = enqueue(page, first)
    enqueue(page, second)
    entries = pending(page)
    assert [e["mid"] for e in entries] == [m["mid"] for m in first + second]
    assert [e["mid"] for e in stored] == [m["mid"] for m in first]
    orders = [e["order"] for e in entries]
    assert orders == sorted(orders) and len(set(orders)) == 4
    assert {e["state"] for e in entries} == {"open"}
    assert all(e["created_at"].endswith("Z") and "T" in e["created_at"] for e in entries)
    assert "seq" not in entries[0]
    assert entries[0]["creates"] is True and entries[0]["policy"] == "append"
    assert entries[1]["patient_id"] == patient


def test_enqueue_is_all_or_nothing(page):
    patient = new_id()
    kept = observation(patient)
    enqueue(page, [kept])
    order_before = meta(page)["next_order"]
    reused = {**observation(patient), "mid": kept["mid"]}
    error = run(page, "try { await enqueue(db, arg, P); return null; } catch (e) { return e.name; }",
                [observation(patient), reused])
    assert error == "ConstraintError"
    assert [e["mid"] for e in pending(page)] == [kept["mid"]]
    assert meta(page)["next_order"] == order_before
    missing = run(page, "try { await enqueue(db, arg, P); } catch (e) { return e.message; }",
                  [{"mid": new_id(), "type": "patient.update", "entity": "patient", "data": {}}])
    assert "entity_id" in missing


def test_two_patches_of_one_record_become_one(page):
    patient, other = new_id(), new_id()
    first = update(patient, {"phone": "0700 000", "address": "Kisumu"},
                   base={"phone": "0711 111", "address": "Nairobi"}, base_version=7)
    elsewhere = update(other, {"phone": "0722 222"}, base={"phone": ""}, base_version=2)
    second = update(patient, {"phone": "0733 333", "given_name": "Amani"},
                    base={"phone": "0700 000", "given_name": "Amina"}, base_version=8)
    stored = enqueue(page, [first, elsewhere])
    merged = enqueue(page, [second])
    entries = pending(page)
    assert [e["mid"] for e in entries] == [first["mid"], elsewhere["mid"]]
    assert merged[0]["mid"] == first["mid"]  # the entry that now holds the second patch
    one = entries[0]
    assert one["data"] == {"phone": "0733 333", "address": "Kisumu", "given_name": "Amani"}
    # What the user saw before the first edit; the later base only fills new fields.
    assert one["base"] == {"phone": "0711 111", "address": "Nairobi", "given_name": "Amina"}
    assert one["base_version"] == 7
    assert one["order"] == stored[0]["order"] and one["created_at"] == stored[0]["created_at"]
    assert one["absorbed"] == [second["mid"]]
    assert entries[1]["data"] == {"phone": "0722 222"}


def test_a_create_absorbs_a_later_patch_of_its_record(page):
    patient = new_id()
    created = register(patient, phone="0700 000")
    patch = update(patient, {"phone": "0711 111", "address": "Kisumu"}, base={"phone": "0700 000"})
    enqueue(page, [created, patch])
    entries = pending(page)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["mid"] == created["mid"] and entry["type"] == "patient.register"
    assert entry["data"] == {**created["data"], "phone": "0711 111", "address": "Kisumu"}
    assert "base" not in entry  # a create has nothing to compare with on the server

    note = new_id()
    draft = mutation("note.write", note, {"patient_id": patient, "text": "Cough"})
    edit = mutation("note.edit", note, {"text": "Cough, 3 days"}, base={"text": "Cough"})
    enqueue(page, [draft, edit])
    assert pending(page)[1]["data"] == {"patient_id": patient, "text": "Cough, 3 days"}


def test_appends_are_never_merged(page):
    patient, obs = new_id(), new_id()
    # Even two appends naming the same record stay two: each means something on its own.
    twins = [observation(patient, 70, entity_id=obs), observation(patient, 71, entity_id=obs)]
    again = [register(patient), register(patient, given_name="Amani")]
    enqueue(page, twins + again)
    assert [e["mid"] for e in pending(page)] == [m["mid"] for m in twins + again]
    assert run(page, "return canMerge(arg[0], arg[1], P);", twins) is False
    assert run(page, "return canMerge(arg[0], arg[1], P);", again) is False


def test_authoritative_mutations_are_never_merged(page):
    patient, slot = new_id(), new_id()
    # A merge-fields type on an authoritative record, only to show the hold does not absorb it.
    policies = {**POLICIES, "appointment.edit": {"policy": "merge-fields", "creates": False}}
    book = mutation("appointment.book", slot, {"patient_id": patient,
                                               "starts_at": "2026-11-21T10:00:00Z"})
    edit = {**mutation("appointment.cancel", slot), "type": "appointment.edit",
            "data": {"reason": "moved"}}
    book_again = mutation("appointment.book", slot, {"patient_id": patient,
                                                     "starts_at": "2026-11-21T11:00:00Z"})
    enqueue(page, [book, edit, book_again], policies)
    assert [e["mid"] for e in pending(page)] == [book["mid"], edit["mid"], book_again["mid"]]
    assert pending(page)[0]["data"]["starts_at"] == "2026-11-21T10:00:00Z"
    assert run(page, "return canMerge(arg.a, arg.b, arg.p);",
               {"a": book, "b": edit, "p": policies}) is False


def test_version_checked_mutations_are_never_merged(page):
    visit, note = new_id(), new_id()
    moves = [mutation("visit.move", visit, {"station": "triage"}, base_version=1),
             mutation("visit.move", visit, {"station": "consultation"}, base_version=2)]
    draft = mutation("note.write", note, {"patient_id": new_id(), "text": "Cough"})
    sign = mutation("note.sign", note, base_version=1)
    # The edit comes after the signature: merging it into the draft would reorder the two.
    late_edit = mutation("note.edit", note, {"text": "Cough!"}, base={"text": "Cough"})
    enqueue(page, [*moves, draft, sign])
    enqueue(page, [late_edit])  # in its own call: the earlier ones are read back from the store
    assert [e["mid"] for e in pending(page)] == [
        m["mid"] for m in [*moves, draft, sign, late_edit]]
    assert pending(page)[2]["data"]["text"] == "Cough"


def test_a_sealed_mutation_never_changes(page):
    patient = new_id()
    first = update(patient, {"phone": "0700 000"}, base={"phone": ""})
    enqueue(page, [first])
    seal(page)
    [sealed] = pending(page)
    later = update(patient, {"phone": "0711 111", "address": "Kisumu"}, base={"phone": "0700 000"})
    enqueue(page, [later])
    entries = pending(page)
    assert entries[0] == sealed
    assert [e["mid"] for e in entries] == [first["mid"], later["mid"]]
    assert [e["state"] for e in entries] == ["sealed", "open"]
    assert run(page, "return canMerge(arg.a, arg.b, P);", {"a": sealed, "b": later}) is False


# Sealing -------------------------------------------------------------------------------------

def test_seal_numbers_contiguously_from_next_seq(page):
    patient = new_id()
    run(page, "await setMeta(db, {next_seq: 41});")
    enqueue(page, [observation(patient) for _ in range(3)])
    assert seal(page) == 3
    assert [(e["seq"], e["state"]) for e in pending(page)] == [
        (41, "sealed"), (42, "sealed"), (43, "sealed")]
    assert meta(page)["next_seq"] == 44
    assert seal(page) == 0
    assert meta(page)["next_seq"] == 44
    enqueue(page, [observation(patient)])
    assert seal(page) == 1
    assert [e["seq"] for e in pending(page)] == [41, 42, 43, 44]
    assert meta(page)["next_seq"] == 45


def test_seal_puts_a_create_before_what_references_it(page):
    # Entries written straight into the store, in an order enqueue would not produce
    # today, to pin the rule itself: a create moves up to just before its first referrer,
    # with the creates it needs in turn; everything else keeps its order.
    patient, visit, obs, moved_visit, other_visit = (new_id() for _ in range(5))
    entries = [
        {**observation(patient, entity_id=obs), "creates": True},
        {**mutation("visit.move", moved_visit, {"station": "lab"}, base_version=3),
         "creates": False},
        {**register(patient), "creates": True},
        {**mutation("visit.start", other_visit, {"patient_id": patient, "clinic_id": CLINIC,
                                                 "station": "triage"}), "creates": True},
        {**mutation("visit.start", visit, {"patient_id": patient, "clinic_id": CLINIC,
                                           "station": "triage"}), "creates": True},
    ]
    entries[0]["data"]["visit_id"] = visit  # the observation needs the visit, which needs the patient
    for order, entry in enumerate(entries, start=1):
        entry.update(order=order, state="open", created_at="2026-11-21T10:00:00.000Z")
    run(page, """
        const tx = db.transaction(["outbox", "meta"], "readwrite");
        for (const entry of arg) tx.objectStore("outbox").put(entry);
        tx.objectStore("meta").put(10, "next_seq");
        tx.objectStore("meta").put(arg.length + 1, "next_order");
        await tx.done;
    """, entries)
    assert seal(page) == 5
    by_seq = [e["entity_id"] for e in pending(page)]
    assert by_seq == [patient, visit, obs, moved_visit, other_visit]
    assert [e["seq"] for e in pending(page)] == [10, 11, 12, 13, 14]


def test_seal_orders_a_create_named_by_a_patch_absorbed_earlier(page):
    # A create absorbs a later patch that names a record created in between: by order
    # alone the visit would reach the server before the note it names.
    patient, visit, note = new_id(), new_id(), new_id()
    policies = {**POLICIES, "visit.update": {"policy": "merge-fields", "creates": False}}
    start = mutation("visit.start", visit, {"patient_id": patient, "clinic_id": CLINIC,
                                            "station": "triage"})
    write = mutation("note.write", note, {"patient_id": patient, "text": "Referral"})
    link = {**mutation("visit.move", visit), "type": "visit.update",
            "data": {"referral_note_id": note}}
    enqueue(page, [start, write, link], policies)
    assert [e["mid"] for e in pending(page)] == [start["mid"], write["mid"]]
    seal(page)
    assert [(e["mid"], e["seq"]) for e in pending(page)] == [(write["mid"], 1), (start["mid"], 2)]


def test_sealed_batch_is_what_the_server_accepts(page):
    patient = new_id()
    mutations = [register(patient), observation(patient),
                 update(new_id(), {"phone": "0700"}, base={"phone": "0799"}, base_version=4)]
    mutations[1]["deps"] = [mutations[0]["mid"]]
    mutations[2]["author"] = "nurse.wanjiru"
    enqueue(page, mutations)
    assert run(page, "return sealedBatch(db);") == []  # open mutations are not sent
    seal(page)
    enqueue(page, [observation(patient)])  # open: stays out of the batch
    batch = run(page, "return sealedBatch(db);")
    assert [m["seq"] for m in batch] == [1, 2, 3]
    validator = jsonschema.validators.validator_for(ENVELOPE_SCHEMA)(ENVELOPE_SCHEMA)
    for wire in batch:
        validator.validate(wire)
    created_at = [e["created_at"] for e in pending(page)]
    assert set(batch[0]) == {"mid", "seq", "type", "entity", "entity_id", "data", "client_ts"}
    assert batch[0]["client_ts"] == created_at[0]
    assert batch[1]["deps"] == [mutations[0]["mid"]]
    assert set(batch[2]) == {"mid", "seq", "type", "entity", "entity_id", "data", "base",
                             "base_version", "client_ts"}
    assert (batch[2]["base"], batch[2]["base_version"]) == ({"phone": "0799"}, 4)
    assert [m["seq"] for m in run(page, "return sealedBatch(db, 2);")] == [1, 2]


# Settling push answers -------------------------------------------------------------------------

def test_settle_takes_only_answers_to_the_current_numbering(page):
    patient = new_id()
    created = register(patient)
    obs, late, still_open = observation(patient), observation(patient), observation(patient)
    enqueue(page, [created, obs, late])
    seal(page)
    enqueue(page, [still_open])
    one, two, three, _ = pending(page)
    record = {"id": patient, "version": 1, "given_name": "Amina"}
    result = settle(page, [
        answer(one, version=1, record=record),
        answer(two, "duplicate"),
        {**answer(three), "seq": 9},            # an answer to an earlier numbering
        {**answer(three), "mid": new_id()},      # not ours
        {**answer(still_open), "seq": 4},        # open: has no seq yet
    ], "req-1")
    assert result == {"settled": 2, "rejected": [], "conflicts": []}
    assert [e["mid"] for e in pending(page)] == [late["mid"], still_open["mid"]]
    assert meta(page)["acked_seq"] == 2
    sent = run(page, "return db.getAllFromIndex('sent', 'seq');")
    assert [(s["mid"], s["seq"], s["status"]) for s in sent] == [
        (created["mid"], 1, "applied"), (obs["mid"], 2, "duplicate")]
    assert run(page, "return getRecord(db, 'patient', arg);", patient) == record
    # An answer for a settled mutation changes nothing the second time.
    assert settle(page, [answer(one)])["settled"] == 0


def test_settle_quarantines_rejections_and_reports_conflicts(page):
    patient = new_id()
    bad, clash, good = (update(patient, {"phone": "0700"}, base={"phone": ""}),
                        mutation("visit.move", new_id(), {"station": "lab"}, base_version=1),
                        observation(patient))
    enqueue(page, [bad])
    seal(page)
    enqueue(page, [clash, good])
    seal(page)
    a, b, c = pending(page)
    server_visit = {"id": clash["entity_id"], "version": 3, "station": "pharmacy"}
    error = {"code": "validation", "message": "phone: not a phone number"}
    conflict = {"fields": ["station"], "server": server_visit}
    result = settle(page, [answer(a, "rejected", error=error),
                           answer(b, "conflict", conflict=conflict, version=3,
                                  record=server_visit),
                           answer(c)], "req-42")
    assert result["settled"] == 3
    [held] = result["rejected"]
    assert held["mid"] == bad["mid"] and held["error"] == error
    assert held["request_id"] == "req-42" and held["quarantined_at"].endswith("Z")
    assert held["mutation"]["data"] == bad["data"] and held["mutation"]["seq"] == 1
    assert [c_["conflict"] for c_ in result["conflicts"]] == [conflict]
    assert run(page, "return listQuarantine(db);") == [held]
    # The server's record stands in for the visit until someone resolves the conflict.
    assert run(page, "return getRecord(db, 'visit', arg);", clash["entity_id"]) == server_visit
    assert meta(page)["acked_seq"] == 3
    assert run(page, "return stats(db);") == {"pending": 0, "oldest_pending_at": None,
                                              "quarantined": 1}
    assert run(page, "return db.count('sent');") == 2


def test_settle_is_all_or_nothing(page):
    enqueue(page, [observation(new_id()), observation(new_id())])
    seal(page)
    one, two = pending(page)
    # The second answer's row cannot be stored (an object is no IndexedDB key): as if the
    # tab died half-way, the first answer must not be settled either.
    error = run(page, """
        const [one, two] = arg;
        const answer = (e, record, id = e.entity_id) => ({mid: e.mid, seq: e.seq,
            status: "applied", entity: e.entity, entity_id: id, version: 1, record});
        try { await settle(db, [answer(one, {ok: 1}), answer(two, {ok: 2}, {})], "r"); }
        catch (e) { return e.name; }
    """, [one, two])
    assert error == "DataError"
    assert [e["mid"] for e in pending(page)] == [one["mid"], two["mid"]]
    assert meta(page)["acked_seq"] == 0
    assert run(page, "return db.count('sent');") == 0
    assert run(page, "return countRows(db);") == 0
    # Malformed answers are ignored like answers to another numbering.
    assert settle(page, [None, {"status": "applied"}, answer(one)])["settled"] == 1


def test_sent_keeps_only_the_newest(page):
    kept = run(page, "return SENT_KEPT;")
    assert kept == 5000
    total = kept + 3
    result = run(page, """
        const patient = crypto.randomUUID();
        const mutations = Array.from({length: arg}, (_, i) => ({
          mid: crypto.randomUUID(), type: "observation.record", entity: "observation",
          entity_id: crypto.randomUUID(),
          data: {patient_id: patient, code: "8867-4", value: i, unit: "/min",
                 effective_at: "2026-11-21T10:04:00Z"}}));
        await enqueue(db, mutations, P);
        await seal(db);
        const batch = await sealedBatch(db, arg);
        const answers = batch.map((m) => ({mid: m.mid, seq: m.seq, status: "applied",
                                           entity: m.entity, entity_id: m.entity_id}));
        const settled = await settle(db, answers, "bulk");
        const oldest = await db.getFromIndex("sent", "seq", IDBKeyRange.lowerBound(0));
        return {settled: settled.settled, sent: await db.count("sent"), oldest: oldest.seq,
                acked: await getMeta(db, "acked_seq")};
    """, total)
    assert result == {"settled": total, "sent": kept, "oldest": 4, "acked": total}


# Renumbering after a server restore ------------------------------------------------------------

def test_renumber_resends_what_a_restored_server_lost_first(page):
    patient = new_id()
    m = [observation(patient, 60 + i) for i in range(6)]
    enqueue(page, m[:5])
    seal(page)
    s = pending(page)
    settle(page, [answer(s[0]), answer(s[1]), answer(s[2], "rejected", error={"code": "x"})])
    enqueue(page, [m[5]])
    assert meta(page)["acked_seq"] == 3

    # The server came back from a backup that knows seq 1 only: it expects 2.
    assert run(page, "return renumberFrom(db, 2);") == 3
    entries = pending(page)
    assert [(e["mid"], e.get("seq"), e["state"]) for e in entries] == [
        (m[1]["mid"], 2, "sealed"),  # answered before, sent again first
        (m[3]["mid"], 3, "sealed"),  # the rejected seq 3 stays in quarantine: no gap
        (m[4]["mid"], 4, "sealed"),
        (m[5]["mid"], None, "open"),
    ]
    assert "status" not in entries[0] and "answered_at" not in entries[0]
    assert [w["seq"] for w in run(page, "return sealedBatch(db);")] == [2, 3, 4]
    state = meta(page)
    assert (state["next_seq"], state["acked_seq"]) == (5, 1)
    assert [x["mid"] for x in run(page, "return db.getAll('sent');")] == [m[0]["mid"]]
    # An answer to the old numbering of m[3] (seq 4) now names m[4]'s number: ignored.
    assert settle(page, [{**answer(entries[1]), "seq": 4}])["settled"] == 0

    # Already where the server expects, or behind it: nothing changes.
    assert run(page, "return renumberFrom(db, 2);") == 0
    assert run(page, "return renumberFrom(db, 9);") == 0
    assert pending(page) == entries
    assert seal(page) == 1
    assert pending(page)[-1]["seq"] == 5


def test_renumber_with_an_empty_queue_resends_from_sent(page):
    patient = new_id()
    m = [observation(patient, 60 + i) for i in range(3)]
    enqueue(page, m)
    seal(page)
    settle(page, [answer(e) for e in pending(page)])
    assert pending(page) == []
    # A pull answered reset with last_seq 1: the server lost seq 2 and 3.
    assert run(page, "return renumberFrom(db, 2);") == 2
    assert [(e["mid"], e["seq"]) for e in pending(page)] == [(m[1]["mid"], 2), (m[2]["mid"], 3)]
    assert (meta(page)["next_seq"], meta(page)["acked_seq"]) == (4, 1)
    error = run(page, "try { await renumberFrom(db, 0); } catch (e) { return e.name; }")
    assert error == "RangeError"


# Rows ----------------------------------------------------------------------------------------

def test_apply_changes_keeps_the_newest_version(page):
    patient = new_id()

    def put(version, name, op="upsert"):
        return {"op": op, "entity": "patient", "id": patient, "version": version,
                "record": {"id": patient, "version": version, "given_name": name}}

    apply = "return applyChanges(db, arg);"
    assert run(page, apply, [put(2, "Amina")]) == 1
    assert run(page, apply, [put(1, "older"), put(2, "same version")]) == 0
    assert run(page, "return getRecord(db, 'patient', arg);", patient)["given_name"] == "Amina"
    # Every op but a removal stores; one row named four times in a page is written once.
    assert run(page, apply, [put(3, "Amani", "update"), put(4, "Amani B", "insert"),
                             put(5, "Amani C", "create"), put(6, "Amani D", "put")]) == 1
    assert run(page, "return getRecord(db, 'patient', arg);", patient)["version"] == 6
    assert run(page, "return putRecords(db, arg);",
               [{"entity": "patient", "id": patient, "version": 6, "record": {"stale": True}},
                {"entity": "patient", "id": patient, "version": 7,
                 "record": {"id": patient, "version": 7, "given_name": "Pushed"}}]) == 1
    assert run(page, "return getRecord(db, 'patient', arg);", patient)["given_name"] == "Pushed"
    assert run(page, "return getRecord(db, 'patient', 'nobody');") is None


def test_a_page_stores_what_is_new_and_keeps_what_the_device_holds_newer(page):
    # Ids in key order: the rows held sit between rows the device has never seen, as when a
    # pull's page covers a stretch of ids of which a push answer already brought some.
    ids = sorted(new_id() for _ in range(6))

    def put(id_, version, name):
        return {"op": "put", "entity": "patient", "id": id_, "version": version,
                "record": {"id": id_, "version": version, "given_name": name}}

    apply = "return applyChanges(db, arg);"
    assert run(page, apply, [put(ids[2], 5, "held newer"), put(ids[3], 1, "held older")]) == 2
    page_of_changes = [put(ids[0], 1, "new"), put(ids[2], 4, "stale"), put(ids[3], 2, "newer"),
                       put(ids[4], 1, "first"), put(ids[4], 3, "third"), put(ids[4], 2, "second"),
                       put(ids[5], 1, "new")]
    assert run(page, apply, page_of_changes) == 4
    names = run(page, "return Promise.all(arg.map(async (id) => (await getRecord(db, 'patient', id))?.given_name ?? null));", ids)
    assert names == ["new", None, "held newer", "newer", "third", "new"]


def test_evicting_a_patient_removes_everything_of_theirs(page):
    patient, other = new_id(), new_id()
    visit, obs, other_visit, clinic = new_id(), new_id(), new_id(), new_id()

    def change(entity, id_, record, op="upsert"):
        return {"op": op, "entity": entity, "id": id_, "version": 1,
                "record": {"id": id_, "version": 1, **record}}

    changes = [change("patient", patient, {}), change("patient", other, {}),
               change("visit", visit, {"patient_id": patient}),
               change("observation", obs, {"patient_id": patient}),
               change("visit", other_visit, {"patient_id": other}),
               change("clinic", clinic, {"name": "Kisumu"})]
    assert run(page, "return applyChanges(db, arg);", changes) == 6
    charts = run(page, """return {
        mine: (await recordsOfPatient(db, arg)).map((r) => r.entity).sort(),
        visits: (await recordsOfEntity(db, "visit")).map((r) => r.id).sort(),
        rows: await countRows(db)};""", patient)
    assert charts == {"mine": ["observation", "patient", "visit"],
                      "visits": sorted([visit, other_visit]), "rows": 6}
    first = run(page, "return recordsOfPatient(db, arg);", other)
    assert {(r["entity"], r["id"], r["version"]) for r in first} == {
        ("patient", other, 1), ("visit", other_visit, 1)}

    assert run(page, "return applyChanges(db, arg);",
               [{"op": "evict", "entity": "visit", "id": visit}]) == 1
    assert run(page, "return applyChanges(db, arg);",
               [{"op": "evict", "entity": "patient", "id": patient},
                {"op": "evict", "entity": "patient", "id": patient}]) == 2
    assert run(page, "return recordsOfPatient(db, arg);", patient) == []
    assert run(page, "return countRows(db);") == 3
    assert run(page, "return applyChanges(db, arg);",
               [{"op": "delete", "entity": "visit", "id": other_visit}]) == 1
    assert run(page, "return recordsOfPatient(db, arg);", other)[0]["entity"] == "patient"
    run(page, "await clearRows(db);")
    assert run(page, "return countRows(db);") == 0


def test_apply_changes_with_reset_and_cursor_is_one_step(page):
    patient, fresh = new_id(), new_id()
    one = {"op": "put", "entity": "patient", "id": patient, "version": 1, "record": {"id": patient}}
    two = {"op": "put", "entity": "patient", "id": fresh, "version": 1, "record": {"id": fresh}}
    run(page, "await applyChanges(db, [arg], {meta: {cursor: 'c1'}});", one)
    assert meta(page)["cursor"] == "c1"
    # A change that cannot be applied fails the page: no rows and no cursor move.
    failed = run(page, """try { await applyChanges(db, [arg, null], {reset: true,
                                                            meta: {cursor: 'c2'}}); }
                          catch { return true; }""", two)
    assert failed
    assert (run(page, "return countRows(db);"), meta(page)["cursor"]) == (1, "c1")
    run(page, "await applyChanges(db, [arg], {reset: true, meta: {cursor: 'c2'}});", two)
    assert run(page, "return (await recordsOfEntity(db, 'patient')).map((r) => r.id);") == [fresh]
    assert meta(page)["cursor"] == "c2"


# Quarantine ----------------------------------------------------------------------------------

def _quarantine_one(page, mutation_: dict, request_id: str = "req-7") -> None:
    enqueue(page, [mutation_])
    seal(page)
    entry = next(e for e in pending(page) if e["mid"] == mutation_["mid"])
    settle(page, [answer(entry, "rejected", error={"code": "validation", "message": "no"})],
           request_id)


def test_a_quarantined_mutation_is_resent_with_new_data_under_a_new_mid(page):
    patient = new_id()
    bad = update(patient, {"phone": "not a phone"}, base={"phone": "0700"}, base_version=4)
    _quarantine_one(page, bad)
    held = run(page, "return getQuarantined(db, arg);", bad["mid"])
    assert held["request_id"] == "req-7" and held["error"]["code"] == "validation"

    fixed = run(page, "return takeForResend(db, arg, {phone: '0711 111'});", bad["mid"])
    assert fixed["mid"] != bad["mid"]
    assert fixed == {"mid": fixed["mid"], "type": "patient.update", "entity": "patient",
                     "entity_id": patient, "data": {"phone": "0711 111"},
                     "base": {"phone": "0700"}, "base_version": 4, "patient_id": patient}
    assert run(page, "return getQuarantined(db, arg);", bad["mid"]) is None
    assert run(page, "return takeForResend(db, arg, {});", bad["mid"]) is None
    enqueue(page, [fixed])
    seal(page)
    [wire] = run(page, "return sealedBatch(db);")
    assert (wire["mid"], wire["seq"], wire["data"]) == (fixed["mid"], 2, {"phone": "0711 111"})


def test_resend_moves_from_quarantine_to_outbox_in_one_step(page):
    patient = new_id()
    bad = update(patient, {"phone": "x"}, base={"phone": "0700"}, base_version=4)
    _quarantine_one(page, bad)
    entry = run(page, "return resend(db, arg, {phone: '0722'}, P);", bad["mid"])
    assert entry["mid"] != bad["mid"] and entry["state"] == "open"
    assert (entry["data"], entry["base"], entry["base_version"]) == (
        {"phone": "0722"}, {"phone": "0700"}, 4)
    assert [e["mid"] for e in pending(page)] == [entry["mid"]]
    assert run(page, "return stats(db);")["quarantined"] == 0
    assert run(page, "return resend(db, arg, {}, P);", bad["mid"]) is None


def test_discard_removes_and_returns_the_entry_oldest_listed_first(page):
    patient = new_id()
    first, second = observation(patient, "high"), observation(patient, "low")
    _quarantine_one(page, first, "req-1")
    page.wait_for_timeout(5)  # distinct quarantined_at
    _quarantine_one(page, second, "req-2")
    listed = run(page, "return listQuarantine(db);")
    assert [(q["mid"], q["request_id"]) for q in listed] == [(first["mid"], "req-1"),
                                                             (second["mid"], "req-2")]
    gone = run(page, "return discard(db, arg);", first["mid"])
    assert gone == listed[0]
    assert run(page, "return discard(db, arg);", first["mid"]) is None
    assert [q["mid"] for q in run(page, "return listQuarantine(db);")] == [second["mid"]]
    assert pending(page) == []


# Encryption at rest -----------------------------------------------------------------------------

CANARY = "Zebulon-Canary-4417"

RAW_TEXT = """
    // Everything IndexedDB holds for this person, as text: strings as they are, bytes as
    // Latin-1, so a name kept in the clear anywhere would show up.
    const texts = [];
    const walk = (v) => {
      if (typeof v === "string") texts.push(v);
      else if (v instanceof Uint8Array || v instanceof ArrayBuffer) {
        texts.push(new TextDecoder("latin1").decode(v));
      } else if (v && typeof v === "object") Object.values(v).forEach(walk);
    };
    for (const name of db.objectStoreNames) walk(await db.getAll(name));
    return texts.join("\\n");
"""


def test_names_values_and_refusals_are_stored_encrypted(page):
    patient = new_id()
    queued = enqueue(page, [register(patient, family_name=CANARY)])
    assert queued[0]["data"]["family_name"] == CANARY  # the app reads it back as it was
    seal(page)
    [entry] = pending(page)
    settle(page, [answer(entry, "rejected", error={"message": f"{CANARY} is not allowed"})])
    run(page, "await applyChanges(db, [arg]);",
        {"entity": "patient", "id": new_id(), "version": 1, "record": {"family_name": CANARY}})
    enqueue(page, [update(patient, {"phone": "0700 000 001"}, base={"phone": CANARY})])

    assert CANARY not in run(page, RAW_TEXT)
    [held] = run(page, "return listQuarantine(db);")
    assert held["mutation"]["data"]["family_name"] == CANARY
    assert held["error"]["message"].startswith(CANARY)
    assert run(page, "return (await pending(db))[0].base;") == {"phone": CANARY}


def test_a_record_moved_to_another_row_or_read_with_another_key_does_not_open(page):
    first, second = new_id(), new_id()
    run(page, "await applyChanges(db, arg);",
        [{"entity": "patient", "id": pid, "version": 1, "record": {"id": pid, "family_name": CANARY}}
         for pid in (first, second)])
    moved = run(page, """
        const [first, second] = arg;
        const a = await db.get("rows", ["patient", first]);
        const b = await db.get("rows", ["patient", second]);
        await db.put("rows", {...b, secret: a.secret});
        try { await getRecord(db, "patient", second); return "opened"; }
        catch (e) { return e.name; }
    """, [first, second])
    assert moved == "OperationError"
    other_key = page.evaluate("""async (id) => {
        const key = await importDataKey(new Uint8Array(32).fill(9));
        const db = await openStore(%r, key);
        try { await getRecord(db, "patient", id); return "opened"; }
        catch (e) { return e.name; } finally { db.close(); }
    }""" % USER, first)
    assert other_key == "OperationError"


def test_a_store_without_its_key_refuses_to_read_or_queue(page):
    patient = new_id()
    enqueue(page, [register(patient, family_name=CANARY)])
    run(page, "await applyChanges(db, [arg]);",
        {"entity": "patient", "id": patient, "version": 1, "record": {"family_name": CANARY}})
    locked = page.evaluate("""async (arg) => {
        const db = await stores.db.openStore(%r, null);
        const refusal = (work) => work.then(() => "done", (e) => e.name);
        try {
          return { read: await refusal(getRecord(db, "patient", arg.patient)),
                   queue: await refusal(enqueue(db, [arg.change], P)),
                   pending: await refusal(pending(db)),
                   waiting: await db.count("outbox") };
        } finally { db.close(); }
    }""" % USER, {"patient": patient, "change": update(patient, {"phone": "0700 000 003"})})
    assert locked == {"read": "LockedError", "queue": "LockedError", "pending": "LockedError",
                      "waiting": 1}


def test_a_store_whose_key_is_lost_gets_its_queue_back_from_the_escrow(page):
    server = EscrowKeys(load_private_key(base64.b64encode(bytes([7]) * 32).decode()))
    patient, record = new_id(), new_id()
    run(page, "attachEscrow(db, %r, arg.key); await enqueue(db, arg.first, P); await seal(db);"
              "attachEscrow(db, %r, arg.key); await enqueue(db, arg.later, P);" % (USER, USER),
        {"key": server.public_jwk(),
         "first": [register(patient, family_name=CANARY)],
         "later": [update(patient, {"phone": "0700 000 002"}, base={"phone": None}),
                   update(patient, {"address": CANARY}, base={"address": "Old Road"})]})
    sealed, still_open = pending(page)
    settle(page, [answer(sealed, "rejected", error={"message": "Duplicate of another patient"})])
    run(page, "await applyChanges(db, [arg]); await setMeta(db, {cursor: 'c-41'});",
        {"entity": "patient", "id": record, "version": 1, "record": {"family_name": "Kept"}})
    before = {"queued": run(page, "return pending(db);"), "refused": run(page, "return listQuarantine(db);")}

    # The key is gone: what waits is readable by nobody on the device, but escrowed.
    escrowed = run(page, "return escrowedParts(db);")
    assert escrowed["unescrowed"] == 0 and len(escrowed["parts"]) == 3
    assert CANARY not in str(escrowed)
    opened = {p["mid"]: server.open(p["escrow"], USER, p["mid"]) for p in escrowed["parts"]}
    assert opened[still_open["absorbed"][0]]["data"] == {"address": CANARY}

    after = page.evaluate("""async (arg) => {
        const db = await stores.db.openStore(%r, null);
        const key = await importDataKey(new Uint8Array(32).fill(11));
        await rekey(db, key, arg.opened, arg.refusals);
        try {
          return { queued: await pending(db), refused: await listQuarantine(db),
                   rows: await countRows(db), cursor: await getMeta(db, "cursor") ?? null };
        } finally { db.close(); }
    }""" % USER, {"opened": opened, "refusals": {sealed["mid"]: {"message": "Duplicate of another patient"}}})
    assert after["queued"] == before["queued"]  # same mids, seqs, order and folded data
    assert [q["mutation"] for q in after["refused"]] == [q["mutation"] for q in before["refused"]]
    assert after["refused"][0]["error"] == {"message": "Duplicate of another patient"}
    assert (after["rows"], after["cursor"]) == (0, None)  # pulled again under the new key
    old_key = run(page, "try { await pending(db); return 'opened'; } catch (e) { return e.name; }")
    assert old_key == "OperationError"
