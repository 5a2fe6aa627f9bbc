// @ts-check
// The patients of the open store, decrypted and kept in the worker's memory, so a search
// scans them there instead of reading and decrypting every row at each keystroke
// (docs/decisions.md, "Patient search on the device"). It follows every committed change to
// the rows (rows.js watchRows) and goes with the data key (dropPatientIndex).
//
// A worker is stopped whenever it sits idle, and reading every row again costs about a second
// for 20,000 patients; so a copy is kept in `meta`, encrypted under the data key like the rows,
// with the positions the rows had when it was taken (pull cursor, acknowledged push, patient
// count). A worker starting finds it valid only if the rows have not moved since; else it
// reads the rows.
import { decryptJSON, encryptJSON, keyOf } from "/static/idb/vault.js";
import { entityRange, recordsOfEntity, watchRows } from "/static/idb/rows.js";

/** @typedef {import("/static/idb/rows.js").RowsChange} RowsChange */

/**
 * @typedef {{store: string, key: CryptoKey, records: Map<string, any>, versions: Map<string, number>,
 *   changes: number}} Index
 *   records: "patient:<id>" → record, the shape searchPatients and withPending take;
 *   changes: how many changes it has followed (a copy is taken only between two)
 */

const COPY = "patient_index";
const COPY_CONTEXT = "patient-index";
/** A copy is taken this long after the last change, not at every page of a pull. */
const COPY_AFTER_MS = 2000;

/** @type {Index|null} */
let held = null;
/** @type {{store: string, key: CryptoKey, done: Promise<Index>, changes: RowsChange[]}|null} */
let building = null;
/** @type {ReturnType<typeof setTimeout>|null} */
let copyTimer = null;

/** @param {any} item */
function versionOf(item) {
  const v = item.version ?? item.record?.version;
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

/**
 * The same rule as rows.js putRowIn: an item replaces the patient held only when newer.
 * @param {Index} index
 * @param {RowsChange} change
 */
function follow(index, change) {
  index.changes += 1;
  if (change.reset) {
    index.records.clear();
    index.versions.clear();
  }
  for (const item of change.removed || []) {
    if (item.entity !== "patient") continue;
    index.records.delete(`patient:${item.id}`);
    index.versions.delete(item.id);
  }
  for (const item of change.stored || []) {
    if (item.entity !== "patient" || !item.record) continue;
    const version = versionOf(item);
    const was = index.versions.get(item.id);
    if (was !== undefined && was >= version) continue;
    index.records.set(`patient:${item.id}`, item.record);
    index.versions.set(item.id, version);
  }
}

/** @type {WeakSet<Index>} indexes read from the rows, not from a copy */
const readFromRows = new WeakSet();

watchRows((db, change) => {
  if (held && held.store === db.name) {
    follow(held, change);
    copySoon(held, db);
  }
  // A change committed while the index is read is applied after it, in order; applying
  // one the read already saw again changes nothing.
  if (building && building.store === db.name) building.changes.push(change);
});

/** @param {any} db the positions of the rows, read together */
async function positions(db) {
  const tx = db.transaction(["meta", "rows"]);
  const [cursor, acked, patients] = await Promise.all([
    tx.objectStore("meta").get("cursor"), tx.objectStore("meta").get("acked_seq"),
    tx.objectStore("rows").count(entityRange("patient")), tx.done]);
  return JSON.stringify([cursor ?? null, acked ?? 0, patients]);
}

/** @param {Index} index @param {any} db */
function copySoon(index, db) {
  if (copyTimer) clearTimeout(copyTimer);
  copyTimer = setTimeout(() => {
    copyTimer = null;
    copy(index, db).catch((error) => console.error("the patient index was not copied", error));
  }, COPY_AFTER_MS);
}

/** @param {Index} index @param {any} db */
async function copy(index, db) {
  if (held !== index) return;
  const changesBefore = index.changes;
  const stamp = await positions(db);
  // A change committed meanwhile may be in the positions and not yet in the index: later.
  if (index.changes !== changesBefore || held !== index) {
    copySoon(index, db);
    return;
  }
  const body = { stamp, records: [...index.records.values()], versions: [...index.versions] };
  const sealed = await encryptJSON(index.key, COPY_CONTEXT, body);
  if (held !== index) return; // the key went meanwhile
  const tx = db.transaction("meta", "readwrite");
  await Promise.all([tx.store.put(sealed, COPY), tx.done]);
}

/** @param {any} db @param {CryptoKey} key @returns {Promise<Index|null>} */
async function fromCopy(db, key) {
  const [sealed, stamp] = await Promise.all([db.get("meta", COPY), positions(db)]);
  if (sealed === undefined) return null;
  let body;
  try {
    body = await decryptJSON(key, COPY_CONTEXT, sealed);
  } catch {
    return null; // taken under an earlier key
  }
  if (body.stamp !== stamp) return null;
  return {
    store: db.name, key, changes: 0, versions: new Map(body.versions),
    records: new Map(body.records.map((/** @type {any} */ record) => [`patient:${record.id}`, record])),
  };
}

/** @param {any} db @param {CryptoKey} key */
async function build(db, key) {
  const copied = await fromCopy(db, key);
  if (copied) return copied;
  const records = await recordsOfEntity(db, "patient");
  /** @type {Index} */
  const index = { store: db.name, key, records: new Map(), versions: new Map(), changes: 0 };
  follow(index, { stored: records.map((record) => ({ entity: "patient", id: record.id, record })) });
  readFromRows.add(index);
  return index;
}

/**
 * Every patient on this device, confirmed rows only (the caller replays the outbox).
 * @param {any} db an open store with its key (LockedError otherwise)
 * @returns {Promise<Map<string, any>>} not to be changed by the caller
 */
export async function patientRecords(db) {
  const key = keyOf(db);
  if (held && held.store === db.name && held.key === key) return held.records;
  if (!building || building.store !== db.name || building.key !== key) {
    const started = { store: db.name, key, done: build(db, key), changes: /** @type {RowsChange[]} */ ([]) };
    building = started;
    started.done.then((index) => {
      if (building !== started) return; // dropped, or another store, meanwhile
      for (const change of started.changes) follow(index, change);
      held = index;
      building = null;
      // Read from the rows: copied for the next worker start.
      if (readFromRows.has(index) || started.changes.length) copySoon(index, db);
    }, () => {
      if (building === started) building = null;
    });
  }
  const index = await building.done;
  if (held !== index) keyOf(db); // dropped while it was read: the device locked, so this throws
  return index.records;
}

/** The key has left the worker: so do the patients read with it. */
export function dropPatientIndex() {
  held = null;
  building = null;
  if (copyTimer) clearTimeout(copyTimer);
  copyTimer = null;
}
