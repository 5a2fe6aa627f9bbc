// @ts-check
// Server-confirmed records, one row per (entity, id), each with the version the server
// gave it. Pending local changes are not here: the view replays the outbox on top.
import { runIn } from "./db.js";
import { unwrap } from "./idb.js";
import { writeMeta } from "./meta.js";
import { decryptJSON, encryptJSONAll, keyOf } from "./vault.js";

/** @typedef {import("./db.js").Store} Store */
/**
 * @typedef {{op?: string, entity: string, id: string, version?: number, record?: any}} Change
 * @typedef {{entity: string, id: string, version?: number, record: any}} Item
 * @typedef {{entity: string, id: string, version: number, patient_id: string|null,
 *   secret: ArrayBuffer|Uint8Array}} StoredRow  a row as IndexedDB holds it: the record
 *   encrypted (vault.js: IV, ciphertext, tag); rows stored before 2026-11-22 hold the same
 *   bytes as a Uint8Array, and both are read alike
 */

/**
 * @typedef {{reset?: boolean, stored?: Item[], removed?: {entity: string, id: string}[]}} RowsChange
 *   what one committed transaction did to `rows`: cleared them first, stored items (each
 *   only if newer than the row held, as putRowIn decides), removed rows
 */

/** @type {Set<(db: Store, change: RowsChange) => void>} */
const watchers = new Set();

/**
 * Be told of every committed change to the rows: for what is kept derived from them in
 * memory (the worker's patient index), which must never show a row the store no longer has.
 * @param {(db: Store, change: RowsChange) => void} watcher
 */
export function watchRows(watcher) {
  watchers.add(watcher);
}

/** @param {Store} db @param {RowsChange} change */
export function rowsChanged(db, change) {
  for (const watcher of watchers) watcher(db, change);
}

/** Ops that take a record away; every other op stores one. */
const REMOVING_OPS = new Set(["evict", "delete"]);

/**
 * Which patient a row belongs to, so evicting a patient can find everything of theirs.
 * @param {string} entity
 * @param {string} id
 * @param {any} record
 * @returns {string|null}
 */
function patientIdOf(entity, id, record) {
  if (entity === "patient") return record?.id ?? id;
  const pid = record?.patient_id;
  return typeof pid === "string" ? pid : null;
}

/**
 * @param {Item} item
 * @returns {number}
 */
function versionOf(item) {
  const v = item.version ?? item.record?.version;
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

/** @param {string} entity @param {string} id */
const rowContext = (entity, id) => `row\u0000${entity}\u0000${id}`;

/**
 * Every row of one entity: the rows' key is [entity, id], so they are one range of it (an
 * array key sorts after every string or number id).
 * @param {string} entity
 */
export function entityRange(entity) {
  return IDBKeyRange.bound([entity], [entity, []]);
}

/**
 * Encrypt items for storing; done before the transaction that stores them opens.
 * @param {object} db the store whose data key encrypts them
 * @param {Item[]} items
 * @returns {Promise<StoredRow[]>}
 */
export async function prepareRows(db, items) {
  const key = keyOf(db);
  const secrets = await encryptJSONAll(key,
    items.map((item) => rowContext(item.entity, item.id)), items.map((item) => item.record));
  return items.map((item, i) => ({
    entity: item.entity,
    id: item.id,
    version: versionOf(item),
    patient_id: patientIdOf(item.entity, item.id, item.record),
    // The bare buffer (each secret owns all of its own): IndexedDB clones a row to find its
    // index keys, and a typed array's view made each put about half as dear again.
    secret: secrets[i].buffer,
  }));
}

/**
 * @param {object} db
 * @param {StoredRow} row
 * @returns {Promise<any>} the record
 */
function openRow(db, row) {
  return decryptJSON(keyOf(db), rowContext(row.entity, row.id), row.secret);
}

/**
 * Store `row` unless the row held is at least as new: answers and pages arrive out of
 * order (a push answer after a pull that already carried a later edit), and an older
 * version must never replace a newer one.
 * @param {any} store the `rows` store of a readwrite transaction
 * @param {StoredRow} row from prepareRows
 * @returns {Promise<number>} 1 when stored, else 0
 */
export async function putRowIn(store, row) {
  /** @type {StoredRow|undefined} */
  const held = await store.get([row.entity, row.id]);
  if (held !== undefined && held.version >= row.version) return 0;
  await store.put(row);
  return 1;
}

/**
 * Whether the store holds any row between the lowest and the highest key of `rows`: one
 * seek. A first sync's pages are runs of ids the device does not hold yet, so their rows
 * need not be read one by one.
 * @param {any} store
 * @param {StoredRow[]} rows at least one
 * @returns {Promise<boolean>}
 */
async function heldRowsAmong(store, rows) {
  let low = rows[0];
  let high = low;
  for (const row of rows) {
    if (keyOrder(row, low) < 0) low = row;
    if (keyOrder(row, high) > 0) high = row;
  }
  const found = await store.getAllKeys(IDBKeyRange.bound([low.entity, low.id], [high.entity, high.id]), 1);
  return found.length > 0;
}

/**
 * IndexedDB's order of two rows' keys. String keys compare by UTF-16 code units there as
 * `<` does here; asking indexedDB.cmp for each of a page's rows cost more than the seek.
 * @param {StoredRow} a
 * @param {StoredRow} b
 */
function keyOrder(a, b) {
  if (typeof a.entity === "string" && typeof b.entity === "string" && typeof a.id === "string" && typeof b.id === "string") {
    if (a.entity !== b.entity) return a.entity < b.entity ? -1 : 1;
    return a.id === b.id ? 0 : a.id < b.id ? -1 : 1;
  }
  return indexedDB.cmp([a.entity, a.id], [b.entity, b.id]);
}

/**
 * Store a page of rows with the same rule as putRowIn, the reads and then the writes each
 * issued together: awaited one by one, every row would cost two round trips to IndexedDB.
 * A key named twice keeps its newest version (the first of equals, as one by one would).
 * @param {any} store the `rows` store of a readwrite transaction
 * @param {StoredRow[]} rows from prepareRows
 * @returns {Promise<number>} rows stored
 */
export async function putRowsIn(store, rows) {
  /** @type {Map<string, StoredRow>} */
  const newest = new Map();
  for (const row of rows) {
    const key = rowContext(row.entity, row.id);
    const other = newest.get(key);
    if (!other || other.version < row.version) newest.set(key, row);
  }
  const candidates = [...newest.values()];
  if (!candidates.length) return 0;
  /** @type {(number|undefined)[]} */
  const held = await heldRowsAmong(store, candidates)
    ? await Promise.all(candidates.map((row) =>
      store.get([row.entity, row.id]).then((/** @type {StoredRow|undefined} */ h) => h?.version)))
    : [];
  const fresh = candidates.filter((row, i) => held[i] === undefined || /** @type {number} */ (held[i]) < row.version);
  // Issued on the bare store, with nothing listening to each request: a promise and four
  // listeners per row were about a sixth of the worker's time in a first sync. A put that fails
  // aborts the transaction, which the caller's runIn reports; requests run in issue order,
  // so whatever the caller issues next still sees these rows.
  /** @type {IDBObjectStore} */
  const bare = unwrap(store) ?? store;
  for (const row of fresh) bare.put(row);
  return fresh.length;
}

/**
 * Remove a row; removing a patient removes every row of that patient with it, since the
 * device may no longer hold any of their data.
 * @param {any} store the `rows` store of a readwrite transaction
 * @param {string} entity
 * @param {string} id
 * @returns {Promise<number>} rows removed
 */
async function removeRowIn(store, entity, id) {
  const keys = [];
  if ((await store.getKey([entity, id])) !== undefined) keys.push([entity, id]);
  if (entity === "patient") {
    for (const key of await store.index("patient_id").getAllKeys(id)) {
      if (!(key[0] === entity && key[1] === id)) keys.push(key);
    }
  }
  await Promise.all(keys.map((key) => store.delete(key)));
  return keys.length;
}

/**
 * @typedef {{changes: Change[], key: CryptoKey, kept: Change[], rows: StoredRow[]}} PreparedChanges
 *   a page's rows encrypted for applyChanges, with the key that encrypted them
 */

/**
 * Encrypt the rows a page of pulled changes stores, before applyChanges: a pull does it for
 * the next page while the one before is being written, so the worker's share of a page and
 * IndexedDB's overlap.
 * @param {Store} db
 * @param {Change[]} changes
 * @returns {Promise<PreparedChanges>}
 */
export async function prepareChanges(db, changes) {
  const key = keyOf(db);
  const kept = changes.filter((change) => !REMOVING_OPS.has(change.op ?? ""));
  return { changes, key, kept, rows: await prepareRows(db, /** @type {Item[]} */ (kept)) };
}

/**
 * Apply a page of pulled changes in one transaction.
 *
 * `options.meta` is written to `meta` in the same transaction, so the cursor can never
 * run ahead of the rows it covers; `options.reset` clears every row first (a pull that
 * answered `reset: true`), so a crash cannot leave a half-cleared copy behind.
 * `options.prepared`: prepareChanges begun earlier for these changes; used only if it
 * succeeded under the store's current key, else they are encrypted again here.
 * @param {Store} db
 * @param {Change[]} changes
 * @param {{meta?: Record<string, any>, reset?: boolean, prepared?: Promise<PreparedChanges>}} [options]
 * @returns {Promise<number>} rows stored or removed
 */
export async function applyChanges(db, changes, options = {}) {
  const early = options.prepared ? await options.prepared.catch(() => null) : null;
  const { kept, rows: prepared } = early && early.changes === changes && early.key === keyOf(db)
    ? early : await prepareChanges(db, changes);
  /** @type {Map<Change, StoredRow>} */
  const rowOf = new Map(kept.map((change, i) => [change, prepared[i]]));
  const stores = options.meta ? ["rows", "meta"] : ["rows"];
  const tx = db.transaction(stores, "readwrite", { durability: "strict" });
  const stored = await runIn(tx, async () => {
    const rows = tx.objectStore("rows");
    if (options.reset) await rows.clear();
    let changed = 0;
    // Puts between two removals go together; a removal waits for what came before it, so
    // an eviction followed by the patient's return ends with the patient held.
    /** @type {StoredRow[]} */
    let run = [];
    for (const change of changes) {
      if (REMOVING_OPS.has(change.op ?? "")) {
        changed += await putRowsIn(rows, run);
        run = [];
        changed += await removeRowIn(rows, change.entity, change.id);
      } else {
        run.push(/** @type {StoredRow} */ (rowOf.get(change)));
      }
    }
    changed += await putRowsIn(rows, run);
    if (options.meta) await writeMeta(tx.objectStore("meta"), options.meta);
    return changed;
  });
  rowsChanged(db, { reset: Boolean(options.reset), stored: kept, removed: changes.filter((c) => REMOVING_OPS.has(c.op ?? "")) });
  return stored;
}

/**
 * Store records answered by a push, with the same version rule as a pull.
 * @param {Store} db
 * @param {Item[]} items
 * @returns {Promise<number>} rows stored
 */
export async function putRecords(db, items) {
  const prepared = await prepareRows(db, items);
  const tx = db.transaction("rows", "readwrite", { durability: "strict" });
  const stored = await runIn(tx, async () => {
    return putRowsIn(tx.store, prepared);
  });
  rowsChanged(db, { stored: items });
  return stored;
}

/**
 * @param {Store} db
 * @param {string} entity
 * @param {string} id
 * @returns {Promise<any>} the record, or undefined
 */
export async function getRecord(db, entity, id) {
  /** @type {StoredRow|undefined} */
  const row = await db.get("rows", [entity, id]);
  return row ? openRow(db, row) : undefined;
}

/**
 * Every row of one patient, the patient's own included.
 * @param {Store} db
 * @param {string} patientId
 * @returns {Promise<{entity: string, id: string, version: number, record: any}[]>}
 */
export async function recordsOfPatient(db, patientId) {
  /** @type {StoredRow[]} */
  const rows = await db.getAllFromIndex("rows", "patient_id", patientId);
  return Promise.all(rows.map(async (row) => ({
    entity: row.entity, id: row.id, version: row.version, record: await openRow(db, row),
  })));
}

/**
 * @param {Store} db
 * @param {string} entity
 * @returns {Promise<any[]>} the records
 */
export async function recordsOfEntity(db, entity) {
  /** @type {StoredRow[]} */
  const rows = await db.getAll("rows", entityRange(entity));
  return Promise.all(rows.map((row) => openRow(db, row)));
}

/** @param {Store} db */
export async function countRows(db) {
  return db.count("rows");
}

/** @param {Store} db */
export async function clearRows(db) {
  const tx = db.transaction("rows", "readwrite", { durability: "strict" });
  await Promise.all([tx.store.clear(), tx.done]);
  rowsChanged(db, { reset: true });
}
